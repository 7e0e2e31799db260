# Versions of everything the test world builds from source. Sourced by the
# world scripts; a change here is a new cache key, so old builds stay usable.
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.0
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.4.4
CNI_VERSION=v1.10.0
OAUTH2_PROXY_VERSION=v7.15.6
DELVE_VERSION=v1.27.2
COREDNS_VERSION=v1.15.0
# Where builds are cached, outside the repository.
GEFYRA_CACHE=${GEFYRA_CACHE:-/var/cache/gefyra}
