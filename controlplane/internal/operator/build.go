package operator

import (
	"context"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/internal/bridge"
)

// Model builds the data plane's model from the cache. It only reads, so
// every replica can build it, leader or not.
func (o *Operator) Model(ctx context.Context) (*model.Model, error) {
	now := time.Now()
	m := &model.Model{Stowaway: model.Stowaway{Address: o.pool.Stowaway(), CIDR: o.pool.Prefix()}}

	var clients gefyrav1.GefyraClientList
	if err := o.client.List(ctx, &clients, client.InNamespace(o.cfg.Namespace)); err != nil {
		return nil, err
	}
	active := map[string]model.Client{}
	for i := range clients.Items {
		c := &clients.Items[i]
		if c.Status.Stowaway != nil && c.Status.Stowaway.PublicKey != "" {
			m.Stowaway.PublicKey = c.Status.Stowaway.PublicKey
		}
		if !o.clientActive(c, now) {
			continue
		}
		addr, err := netip.ParseAddr(c.Status.Address)
		if err != nil {
			continue
		}
		mc := model.Client{Name: c.Name, User: c.Spec.User, PublicKey: c.Spec.PublicKey, Address: addr}
		active[c.Name] = mc
		m.Clients = append(m.Clients, mc)
	}

	var mounts gefyrav1.GefyraMountList
	if err := o.client.List(ctx, &mounts); err != nil {
		return nil, err
	}
	inModel := map[string]bool{}
	declared := map[string][]model.Port{}
	for i := range mounts.Items {
		mt := &mounts.Items[i]
		if !mt.DeletionTimestamp.IsZero() {
			continue
		}
		mm := model.Mount{Namespace: mt.Namespace, Name: mt.Name, Kind: string(mt.Spec.Target.Kind),
			Workload: mt.Spec.Target.Name, Container: mt.Spec.Target.Container}
		for _, p := range mt.Status.Ports {
			if p.ContainerPort > 0 && p.ContainerPort <= 65535 {
				proto := string(p.Protocol)
				if proto == "" {
					proto = string(corev1.ProtocolTCP)
				}
				mm.Ports = append(mm.Ports, model.Port{Name: p.Name, Port: uint16(p.ContainerPort), Protocol: proto})
			}
		}
		var pods corev1.PodList
		if err := o.client.List(ctx, &pods, client.InNamespace(mt.Namespace), client.MatchingLabels{LabelCarrier: "true"}); err != nil {
			return nil, err
		}
		for _, p := range pods.Items {
			if p.Annotations[AnnotationMount+mt.Spec.Target.Container] != mt.Name || !p.DeletionTimestamp.IsZero() {
				continue
			}
			ip, _ := netip.ParseAddr(p.Status.PodIP)
			mm.Pods = append(mm.Pods, model.Pod{Namespace: p.Namespace, Name: p.Name, IP: ip})
		}
		if mt.Status.Fallback != nil {
			for _, e := range mt.Status.Fallback.Endpoints {
				if ip, err := netip.ParseAddr(e); err == nil {
					mm.Fallback = append(mm.Fallback, ip)
				}
			}
		}
		inModel[mm.Key()] = true
		declared[mm.Key()] = mm.Ports
		m.Mounts = append(m.Mounts, mm)
	}

	var bridges gefyrav1.GefyraBridgeList
	if err := o.client.List(ctx, &bridges); err != nil {
		return nil, err
	}
	for i := range bridges.Items {
		b := &bridges.Items[i]
		c, ok := active[b.Spec.Client]
		if !ok || !b.DeletionTimestamp.IsZero() || !meta.IsStatusConditionTrue(b.Status.Conditions, gefyrav1.ConditionAccepted) {
			continue
		}
		if b.Spec.TTL != nil && !now.Before(b.CreationTimestamp.Add(b.Spec.TTL.Duration)) {
			continue
		}
		mount := gefyrav1.MountName(b.Spec.Target)
		if !inModel[b.Namespace+"/"+mount] {
			continue
		}
		ports, rules, err := b.Spec.Model()
		if err != nil || !portsDeclared(ports, declared[b.Namespace+"/"+mount]) {
			continue
		}
		m.Bridges = append(m.Bridges, model.Bridge{Namespace: b.Namespace, Name: b.Name, Mount: mount,
			Client: c.Name, ClientAddress: c.Address, Ports: ports, Rules: rules, Local: b.Spec.Local})
	}
	m.Sort()
	return m, nil
}

// portsDeclared says whether every remote port is a declared TCP port.
func portsDeclared(ports []bridge.PortMapping, declared []model.Port) bool {
	for _, p := range ports {
		if !slices.ContainsFunc(declared, func(d model.Port) bool { return d.Port == p.Remote && d.Protocol == "TCP" }) {
			return false
		}
	}
	return true
}
