# dns.sh: the cluster DNS. CoreDNS (built from its Go module by build.sh)
# runs as the Deployment kube-system/coredns behind the Service
# kube-system/kube-dns at DNS_SERVICE_IP, as in any real cluster, and kubelet
# points every Pod at it (clusterDNS in config.sh). It answers for
# CLUSTER_DOMAIN and the reverse zones from the API and forwards nothing:
# it is itself authoritative for an empty root zone, so any other name gets
# NXDOMAIN at once, as an upstream would say for a name that does not exist
# (a Pod's search list then ends in "not found", not in a temporary
# failure), and no question ever leaves the machine. Sourced, never run.

# dns_tools: the CoreDNS image (FROM scratch) and dnsq, the host's DNS client
# that `up` waits with, built once per version and source.
dns_tools() {
	local coredns key dir
	coredns=$("$here/build.sh" --dir coredns)/coredns
	key=$({
		echo "$COREDNS_VERSION $COREDNS_IMAGE"
		cat "$here/mkimage/main.go" "$here/../internal/ociimage/ociimage.go" \
			"$here/dnsq/main.go" "$here/../internal/testworld/dnsq/dnsq.go"
	} | sha256sum | cut -c1-16)
	dir=$GEFYRA_CACHE/world-dns-$key
	COREDNS_TAR=$dir/coredns.tar
	DNSQ=$dir/dnsq
	[ -f "$dir/.complete" ] && return 0
	log "building the CoreDNS image and dnsq"
	local tmp
	tmp=$(mktemp -d "$GEFYRA_CACHE/.build-XXXXXX")
	(
		cd "$here/.."
		CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$tmp/dnsq" ./world/dnsq
		go run ./world/mkimage -o "$tmp/coredns.tar" -tag "$COREDNS_IMAGE" -add "$coredns:/coredns" \
			-entrypoint /coredns -port 53/udp -port 53 -port 9153 -user 65532:65532 >/dev/null
	) || { rm -rf "$tmp"; die "building the CoreDNS image failed"; }
	touch "$tmp/.complete"
	rm -rf "$dir"
	mv "$tmp" "$dir"
}

# dns_manifest: RBAC, the Corefile, the Deployment and the Service.
dns_manifest() {
	cat <<-EOF
		apiVersion: v1
		kind: ServiceAccount
		metadata:
		  name: coredns
		  namespace: kube-system
		---
		apiVersion: rbac.authorization.k8s.io/v1
		kind: ClusterRole
		metadata:
		  name: system:coredns
		  labels: {kubernetes.io/bootstrapping: rbac-defaults}
		rules:
		- apiGroups: [""]
		  resources: [endpoints, services, pods, namespaces]
		  verbs: [list, watch]
		- apiGroups: [discovery.k8s.io]
		  resources: [endpointslices]
		  verbs: [list, watch]
		---
		apiVersion: rbac.authorization.k8s.io/v1
		kind: ClusterRoleBinding
		metadata:
		  name: system:coredns
		  labels: {kubernetes.io/bootstrapping: rbac-defaults}
		roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:coredns}
		subjects:
		- {kind: ServiceAccount, name: coredns, namespace: kube-system}
		---
		apiVersion: v1
		kind: ConfigMap
		metadata:
		  name: coredns
		  namespace: kube-system
		data:
		  # No forward (and no resolv.conf behind it): a name outside the
		  # cluster's zones (and a reverse name of no Service or Pod) falls
		  # through to the empty root zone, NXDOMAIN.
		  Corefile: |
		    .:53 {
		        errors
		        health
		        ready
		        kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
		            pods insecure
		            fallthrough in-addr.arpa ip6.arpa
		        }
		        prometheus :9153
		        cache 30
		        loop
		        file /etc/coredns/root.db .
		    }
		  root.db: |
		    . 30 IN SOA ns.dns.$CLUSTER_DOMAIN. hostmaster.$CLUSTER_DOMAIN. 1 7200 1800 86400 30
		---
		apiVersion: apps/v1
		kind: Deployment
		metadata:
		  name: coredns
		  namespace: kube-system
		  labels: {k8s-app: kube-dns}
		spec:
		  replicas: 1
		  selector:
		    matchLabels: {k8s-app: kube-dns}
		  strategy:
		    type: RollingUpdate
		    rollingUpdate: {maxUnavailable: 1}
		  template:
		    metadata:
		      labels: {k8s-app: kube-dns}
		    spec:
		      serviceAccountName: coredns
		      priorityClassName: system-cluster-critical
		      # The node's (empty) resolv.conf, not the cluster DNS itself.
		      dnsPolicy: Default
		      terminationGracePeriodSeconds: 5
		      tolerations:
		      - {key: CriticalAddonsOnly, operator: Exists}
		      - {key: node-role.kubernetes.io/control-plane, effect: NoSchedule}
		      securityContext:
		        runAsUser: 65532
		        runAsGroup: 65532
		        runAsNonRoot: true
		        seccompProfile: {type: RuntimeDefault}
		        # Port 53 without any capability (a safe, per-Pod sysctl).
		        sysctls:
		        - {name: net.ipv4.ip_unprivileged_port_start, value: "53"}
		      containers:
		      - name: coredns
		        image: $COREDNS_IMAGE
		        imagePullPolicy: Never
		        args: [-conf, /etc/coredns/Corefile]
		        ports:
		        - {name: dns, containerPort: 53, protocol: UDP}
		        - {name: dns-tcp, containerPort: 53, protocol: TCP}
		        - {name: metrics, containerPort: 9153, protocol: TCP}
		        resources:
		          requests: {cpu: 50m, memory: 70Mi}
		          limits: {memory: 170Mi}
		        securityContext:
		          allowPrivilegeEscalation: false
		          readOnlyRootFilesystem: true
		          capabilities: {drop: [ALL]}
		        livenessProbe:
		          httpGet: {path: /health, port: 8080}
		          initialDelaySeconds: 60
		          timeoutSeconds: 5
		          failureThreshold: 5
		        # Ready once the kubernetes plugin has synced with the API; a
		        # short period keeps \`world.sh up\` fast.
		        readinessProbe:
		          httpGet: {path: /ready, port: 8181}
		          periodSeconds: 1
		        volumeMounts:
		        - {name: config, mountPath: /etc/coredns, readOnly: true}
		      volumes:
		      - name: config
		        configMap:
		          name: coredns
		          items: [{key: Corefile, path: Corefile}, {key: root.db, path: root.db}]
		---
		apiVersion: v1
		kind: Service
		metadata:
		  name: kube-dns
		  namespace: kube-system
		  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
		  annotations: {prometheus.io/port: "9153", prometheus.io/scrape: "true"}
		spec:
		  selector: {k8s-app: kube-dns}
		  clusterIP: $DNS_SERVICE_IP
		  ports:
		  - {name: dns, port: 53, targetPort: 53, protocol: UDP}
		  - {name: dns-tcp, port: 53, targetPort: 53, protocol: TCP}
		  - {name: metrics, port: 9153, targetPort: 9153, protocol: TCP}
	EOF
}

dns_apply() {
	local out
	out=$(dns_manifest | kc apply -f - 2>&1) || die "deploying CoreDNS failed: $out"
}

# dns_answers: the cluster DNS, asked from the host through its Service IP,
# knows the API server's Service.
dns_answers() {
	"$DNSQ" -timeout 1s "$DNS_SERVICE_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN" 2>/dev/null |
		awk -v ip="$KUBERNETES_SERVICE_IP" '$3 == "A" && $4 == ip { found = 1 } END { exit !found }'
}

# dns_wait: waits until the cluster DNS answers; says why when it does not.
dns_wait() {
	wait_for "the cluster DNS at $DNS_SERVICE_IP" 60 dns_answers && return 0
	kc -n kube-system get deploy,pods -l k8s-app=kube-dns -o wide >&2 || true
	kc -n kube-system get endpointslices -l kubernetes.io/service-name=kube-dns -o wide >&2 || true
	kc -n kube-system logs deploy/coredns --tail=30 >&2 || true
	die "the cluster DNS did not answer (see above and $LOGS)"
}
