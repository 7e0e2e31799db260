# config.sh: the world's certificates, kubeconfigs and component
# configuration files, all generated fresh by `up` into STATE. Sourced,
# never run.

# openssl_conf [SAN]: a minimal OpenSSL config with a CA and a leaf profile,
# so nothing from the machine's openssl.cnf leaks into the certificates.
openssl_conf() {
	printf '%s\n' '[req]' 'distinguished_name=dn' '[dn]' \
		'[ca]' 'basicConstraints=critical,CA:TRUE' 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature' 'subjectKeyIdentifier=hash' \
		'[leaf]' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
		'extendedKeyUsage=serverAuth,clientAuth' 'authorityKeyIdentifier=keyid'
	[ -z "${1:-}" ] || printf 'subjectAltName=%s\n' "$1"
}

# cert NAME SUBJECT [SAN]: a P-256 key and a certificate signed by the world's
# CA, valid for a year (a world lives for hours).
cert() {
	local name=$1 subj=$2 san=${3:-}
	openssl req -x509 -config <(openssl_conf "$san") -extensions leaf \
		-CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -days 365 \
		-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$PKI/$name.key" -out "$PKI/$name.crt" -subj "$subj" 2>/dev/null
}

pki_up() {
	[ -s "$PKI/sa.pub" ] && return 0
	mkdir -p "$PKI"
	chmod 700 "$PKI"
	openssl req -x509 -config <(openssl_conf) -extensions ca -days 365 \
		-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj /CN=gefyra-world-ca 2>/dev/null
	cert apiserver /CN=kube-apiserver \
		"IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	cert apiserver-kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client
	cert admin /O=system:masters/CN=gefyra-world-admin
	cert controller-manager /CN=system:kube-controller-manager
	cert scheduler /CN=system:kube-scheduler
	cert kube-proxy /CN=system:kube-proxy
	cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
	cert kubelet-server "/CN=$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/sa.key" 2>/dev/null
	openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub.tmp" 2>/dev/null
	mv "$PKI/sa.pub.tmp" "$PKI/sa.pub"
}

# kubeconfig FILE CERTNAME: a kubeconfig with everything inline.
kubeconfig() {
	local file=$1 name=$2
	(
		umask 077
		cat >"$file.tmp" <<-EOF
			apiVersion: v1
			kind: Config
			clusters:
			- name: $NODE_NAME
			  cluster:
			    server: $API_URL
			    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
			users:
			- name: $name
			  user:
			    client-certificate-data: $(base64 -w0 "$PKI/$name.crt")
			    client-key-data: $(base64 -w0 "$PKI/$name.key")
			contexts:
			- name: $NODE_NAME
			  context:
			    cluster: $NODE_NAME
			    user: $name
			current-context: $NODE_NAME
		EOF
		mv "$file.tmp" "$file"
	)
}

configs_up() {
	mkdir -p "$STATE/conf" "$STATE/cni/net.d" "$STATE/containerd/certs.d/_default"
	local c
	for c in controller-manager scheduler kube-proxy kubelet; do
		kubeconfig "$STATE/conf/$c.kubeconfig" "$c"
	done
	kubeconfig "$KUBECONFIG_ADMIN" admin

	# The node's resolver configuration, which kubelet hands on to Pods
	# (cluster DNS adds its server and search list on top of it, and CoreDNS
	# itself gets only this): empty, so no Pod ever learns of the machine's
	# own DNS servers and nothing upstream can be asked.
	: >"$STATE/conf/resolv.conf"

	# Every registry is a closed loopback port: a pull fails at once.
	cat >"$STATE/containerd/certs.d/_default/hosts.toml" <<-'EOF'
		server = "http://127.0.0.1:9"
		[host."http://127.0.0.1:9"]
		  capabilities = ["pull", "resolve"]
	EOF

	cat >"$STATE/conf/containerd.toml" <<-EOF
		version = 4
		root = "$STATE/containerd"
		state = "$RUN/containerd"
		# Not the machine's drop-ins (/etc/containerd/conf.d): they belong to
		# another containerd.
		imports = []
		# NRI would open /var/run/nri/nri.sock, outside the world.
		disabled_plugins = ["io.containerd.nri.v1.nri"]

		# Every socket under RUN: the defaults are the machine's own
		# /run/containerd. (No debug or metrics server: they are only started
		# when given an address.)
		[plugins.'io.containerd.server.v1.grpc']
		  address = "$CONTAINERD_SOCK"
		[plugins.'io.containerd.server.v1.ttrpc']
		  address = "$CONTAINERD_SOCK.ttrpc"

		[plugins.'io.containerd.internal.v1.opt']
		  path = "$STATE/containerd/opt"

		[plugins.'io.containerd.cri.v1.runtime']
		  # root lacks CAP_SYS_RESOURCE on these machines: never ask for an
		  # oom_score_adj below containerd's own.
		  restrict_oom_score_adj = true
		  netns_mounts_under_state_dir = true
		  cdi_spec_dirs = []
		  [plugins.'io.containerd.cri.v1.runtime'.containerd]
		    default_runtime_name = "runc"
		    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
		        BinaryName = "$RUNC"
		        Root = "$RUN/runc"
		        SystemdCgroup = false
		  [plugins.'io.containerd.cri.v1.runtime'.cni]
		    bin_dirs = ["$CNI_BIN"]
		    conf_dir = "$STATE/cni/net.d"
		    max_conf_num = 1

		[plugins.'io.containerd.cri.v1.images']
		  snapshotter = "overlayfs"
		  [plugins.'io.containerd.cri.v1.images'.pinned_images]
		    sandbox = "$PAUSE_IMAGE"
		  [plugins.'io.containerd.cri.v1.images'.registry]
		    config_path = "$STATE/containerd/certs.d"

		[plugins.'io.containerd.transfer.v1.local']
		  config_path = "$STATE/containerd/certs.d"

		[plugins.'io.containerd.grpc.v1.cri']
		  disable_tcp_service = true
		  stream_server_address = "127.0.0.1"
		  stream_server_port = "0"
	EOF

	cat >"$STATE/cni/net.d/10-$NETNS.conflist" <<-EOF
		{
		  "cniVersion": "1.0.0",
		  "name": "$NETNS",
		  "plugins": [
		    {
		      "type": "bridge",
		      "bridge": "$POD_BRIDGE",
		      "isGateway": true,
		      "ipMasq": false,
		      "hairpinMode": true,
		      "ipam": {
		        "type": "host-local",
		        "dataDir": "$STATE/cni/networks",
		        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
		        "routes": [{"dst": "0.0.0.0/0"}]
		      }
		    },
		    {"type": "portmap", "capabilities": {"portMappings": true}}
		  ]
		}
	EOF

	cat >"$STATE/conf/kubelet.yaml" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		# cgroups v1 (hybrid) and no systemd as PID 1 on these machines.
		failCgroupV1: false
		cgroupDriver: cgroupfs
		cgroupRoot: /$CGROUP_PARENT
		containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
		resolvConf: $STATE/conf/resolv.conf
		clusterDNS: [$DNS_SERVICE_IP]
		clusterDomain: $CLUSTER_DOMAIN
		podLogsDir: $STATE/pod-logs
		address: $NODE_IP
		healthzBindAddress: 127.0.0.1
		readOnlyPort: 0
		tlsCertFile: $PKI/kubelet-server.crt
		tlsPrivateKeyFile: $PKI/kubelet-server.key
		authentication:
		  anonymous:
		    enabled: false
		  webhook:
		    enabled: true
		  x509:
		    clientCAFile: $PKI/ca.crt
		authorization:
		  mode: Webhook
		oomScoreAdj: 0
		failSwapOn: false
		shutdownGracePeriod: 0s
		systemReserved:
		  cpu: 50m
		  memory: 64Mi
		kubeReserved:
		  cpu: 50m
		  memory: 64Mi
		evictionHard:
		  memory.available: 100Mi
		  nodefs.available: 1%
		  nodefs.inodesFree: 1%
		  imagefs.available: 1%
		# Images cannot be pulled again: never collect them.
		imageGCHighThresholdPercent: 100
		imageGCLowThresholdPercent: 99
		serializeImagePulls: false
		maxPods: 110
	EOF

	cat >"$STATE/conf/kube-proxy.yaml" <<-EOF
		apiVersion: kubeproxy.config.k8s.io/v1alpha1
		kind: KubeProxyConfiguration
		clientConnection:
		  kubeconfig: $STATE/conf/kube-proxy.kubeconfig
		hostnameOverride: $NODE_NAME
		mode: iptables
		iptables:
		  # React to new Services and endpoints quickly; a test waits on it.
		  minSyncPeriod: 250ms
		clusterCIDR: $POD_CIDR
		nodePortAddresses: ["$NODE_IP/32"]
		healthzBindAddress: 127.0.0.1:10256
		metricsBindAddress: 127.0.0.1:10249
		oomScoreAdj: 0
		# Leave the machine's conntrack table size alone (it is not per
		# namespace).
		conntrack:
		  maxPerCore: 0
		  min: 0
		  tcpEstablishedTimeout: 0s
		  tcpCloseWaitTimeout: 0s
	EOF

	cat >"$WORLD_ENV" <<-EOF
		KUBECONFIG=$KUBECONFIG_ADMIN
		GEFYRA_KUBECONFIG=$KUBECONFIG_ADMIN
		GEFYRA_WORLD_KUBECTL=$KUBECTL
		GEFYRA_WORLD_CTR=$CTR
		GEFYRA_WORLD_CONTAINERD=$CONTAINERD_SOCK
		GEFYRA_WORLD_NODE_IP=$NODE_IP
		GEFYRA_WORLD_HOST_IP=$HOST_IP
		GEFYRA_WORLD_POD_CIDR=$POD_CIDR
		GEFYRA_WORLD_SERVICE_CIDR=$SERVICE_CIDR
		GEFYRA_WORLD_NODE_NAME=$NODE_NAME
		GEFYRA_WORLD_PAUSE_IMAGE=$PAUSE_IMAGE
		GEFYRA_WORLD_DNS_IP=$DNS_SERVICE_IP
		GEFYRA_WORLD_CLUSTER_DOMAIN=$CLUSTER_DOMAIN
	EOF
}
