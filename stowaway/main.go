// Package main is command stowaway: gefyra's in-cluster relay: one userspace WireGuard
// endpoint (UDP) for every developer's agent, a TCP relay on which
// carriers open one connection per bridged connection, and (with
// --egress-networks) the way out into the cluster for the developers' own
// TCP and UDP. See stowaway/internal/server.
//
// Every flag can also be set by an environment variable: --relay-port is
// GEFYRA_STOWAWAY_RELAY_PORT, and so on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/internal/admin"
	"gefyra.dev/gefyra/internal/logging"
	"gefyra.dev/gefyra/internal/version"
	"gefyra.dev/gefyra/internal/wgnet"
	"gefyra.dev/gefyra/internal/xdsclient"
	"gefyra.dev/gefyra/stowaway/internal/config"
	"gefyra.dev/gefyra/stowaway/internal/egress"
	"gefyra.dev/gefyra/stowaway/internal/relay"
	"gefyra.dev/gefyra/stowaway/internal/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "stowaway:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("stowaway", flag.ContinueOnError)
	var (
		wgPort      = fs.Int("wireguard-port", 51820, "UDP port of the WireGuard endpoint")
		relayPort   = fs.Int("relay-port", 8833, "TCP port carriers connect to")
		adminPort   = fs.Int("admin-port", 9090, "TCP port of /metrics, /healthz and /readyz")
		tunnelAddr  = fs.String("tunnel-address", server.DefaultTunnelAddress.String(), "stowaway's address inside the tunnel")
		mtu         = fs.Int("mtu", wgnet.DefaultMTU, "tunnel MTU")
		keyFile     = fs.String("private-key-file", "", "file holding the WireGuard private key (base64, as wg genkey writes it); empty generates a key at start")
		pubFile     = fs.String("public-key-file", "", "if set, write the WireGuard public key here at start")
		dialTimeout = fs.Duration("dial-timeout", relay.DefaultDialTimeout, "how long to wait for a developer's side to answer before refusing as peer down")
		egressNets  = fs.String("egress-networks", "", "comma-separated networks (the cluster's Service and Pod CIDRs) to which stowaway carries its peers' TCP and UDP; empty turns the egress off")
		clusterDNS  = fs.String("cluster-dns", "", "the cluster DNS server's IP, announced to peers (default: the first nameserver of --resolv-conf)")
		clusterDom  = fs.String("cluster-domain", "", "the cluster's DNS domain, announced to peers (default: from the search list of --resolv-conf, else cluster.local)")
		resolvConf  = fs.String("resolv-conf", "/etc/resolv.conf", "the Pod's resolv.conf, read for the cluster DNS and domain")
		configFile  = fs.String("config", "", "JSON file with peers, bridges and credential keys, re-read on SIGHUP (instead of xDS)")
		xdsServer   = fs.String("xds-server", "", "control plane's ADS address (host:port); config then arrives over xDS")
		xdsNodeID   = fs.String("xds-node-id", "gefyra/stowaway", "node ID this stowaway presents to the control plane")
		xdsToken    = fs.String("xds-token-file", "", "file with the bearer token for the control plane, re-read on every connect")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat   = fs.String("log-format", "", "json or text (default: text on a terminal, else json)")
		showVersion = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if err := flagsFromEnv(fs, "GEFYRA_STOWAWAY_"); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println(version.Version)
		return nil
	}
	log, err := logging.New(logging.Options{Level: *logLevel, Format: *logFormat})
	if err != nil {
		return err
	}
	addr, err := netip.ParseAddr(*tunnelAddr)
	if err != nil {
		return fmt.Errorf("--tunnel-address: %w", err)
	}
	key, err := privateKey(*keyFile, log)
	if err != nil {
		return err
	}
	if *pubFile != "" {
		if err := os.WriteFile(*pubFile, []byte(key.PublicKey().String()+"\n"), 0o644); err != nil {
			return fmt.Errorf("--public-key-file: %w", err)
		}
	}

	eg, err := egressInfo(*egressNets, *clusterDNS, *clusterDom, *resolvConf, log)
	if err != nil {
		return err
	}

	reg := admin.NewRegistry()
	srv, err := server.New(server.Options{
		PrivateKey:    key,
		WireGuardPort: *wgPort,
		TunnelAddress: addr,
		MTU:           *mtu,
		RelayAddr:     net.JoinHostPort("", strconv.Itoa(*relayPort)),
		Egress:        eg,
		Log:           log,
		Registry:      reg,
	})
	if err != nil {
		return err
	}
	srv.Relay.DialTimeout = *dialTimeout
	log.Info("stowaway starting", "version", version.Version, "public_key", key.PublicKey().String(),
		"wireguard_port", srv.Net.ListenPort(), "tunnel_address", addr.String(), "mtu", srv.Net.MTU())
	if eg != nil {
		log.Info("egress on", "networks", fmt.Sprint(eg.Networks), "cluster_dns", eg.DNS.String(), "cluster_domain", eg.ClusterDomain)
	}

	adm := &admin.Server{Addr: net.JoinHostPort("", strconv.Itoa(*adminPort)), Registry: reg, Log: log}
	load := func() error {
		if *configFile == "" {
			return nil
		}
		cfg, err := config.ReadFile(*configFile)
		if err != nil {
			return err
		}
		return srv.Update(cfg)
	}
	if *configFile != "" && *xdsServer != "" {
		srv.Net.Close()
		return errors.New("--config and --xds-server exclude each other")
	}
	if err := load(); err != nil {
		srv.Net.Close()
		return err
	}
	var xds *xdsclient.Client
	if *xdsServer != "" {
		xds, err = xdsclient.New(xdsclient.Config{
			Server:    *xdsServer,
			NodeID:    *xdsNodeID,
			Types:     []string{config.TypeURL},
			TokenFile: *xdsToken,
			Log:       log,
		}, func(res map[string][]proto.Message) error {
			// Ready once the first config is in: until then every carrier
			// connection would be refused.
			err := srv.XDSCallback(res)
			if err == nil {
				adm.SetReady(true)
			}
			return err
		})
		if err != nil {
			srv.Net.Close()
			return err
		}
	} else {
		adm.SetReady(true)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	g.Go(func() error { return adm.Run(ctx) })
	if xds != nil {
		g.Go(func() error { return xds.Run(ctx) })
	}
	g.Go(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				if err := load(); err != nil {
					log.Error("config reload failed; keeping the old config", "err", err)
				}
			}
		}
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// egressInfo is the egress stowaway serves: the networks given, the
// cluster DNS and domain given or read from the Pod's resolv.conf (a Pod
// with dnsPolicy ClusterFirst has the cluster DNS there). A DNS server
// outside the networks is added to them as a host route, or peers could
// not ask it. nil if no networks are given.
func egressInfo(networks, dns, domain, resolvConf string, log *slog.Logger) (*wgnet.EgressInfo, error) {
	if strings.TrimSpace(networks) == "" {
		return nil, nil
	}
	var info wgnet.EgressInfo
	for _, s := range strings.Split(networks, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--egress-networks: %w", err)
		}
		info.Networks = append(info.Networks, p.Masked())
	}
	var rcDNS netip.Addr
	var rcDomain string
	if dns == "" || domain == "" {
		if b, err := os.ReadFile(resolvConf); err == nil {
			rcDNS, rcDomain = egress.FromResolvConf(b)
		} else {
			log.Warn("cannot read the Pod's resolv.conf for the cluster DNS", "err", err)
		}
	}
	switch {
	case dns != "":
		a, err := netip.ParseAddr(dns)
		if err != nil {
			return nil, fmt.Errorf("--cluster-dns: %w", err)
		}
		info.DNS = a.Unmap()
	case rcDNS.IsValid():
		info.DNS = rcDNS
	}
	switch {
	case domain != "":
		info.ClusterDomain = strings.TrimSuffix(domain, ".")
	case rcDomain != "":
		info.ClusterDomain = rcDomain
	default:
		info.ClusterDomain = "cluster.local"
	}
	if info.DNS.IsValid() && !info.Contains(info.DNS) {
		info.Networks = append(info.Networks, netip.PrefixFrom(info.DNS, info.DNS.BitLen()))
	}
	if err := info.Validate(); err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	return &info, nil
}

// privateKey reads the key file, or generates a key if there is none.
func privateKey(path string, log *slog.Logger) (wgnet.Key, error) {
	if path == "" {
		k, err := wgnet.GeneratePrivateKey()
		if err != nil {
			return wgnet.Key{}, err
		}
		log.Warn("no --private-key-file: generated a WireGuard key; agents must learn the new public key after every restart")
		return k, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return wgnet.Key{}, fmt.Errorf("--private-key-file: %w", err)
	}
	k, err := wgnet.ParseKey(string(b))
	if err != nil {
		return wgnet.Key{}, fmt.Errorf("--private-key-file %s: %w", path, err)
	}
	return k, nil
}

// flagsFromEnv sets every flag not given on the command line from
// PREFIX_FLAG_NAME, if that is set.
func flagsFromEnv(fs *flag.FlagSet, prefix string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if serr := f.Value.Set(v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, serr)
			}
		}
	})
	return err
}
