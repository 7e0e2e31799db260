// Package route sets the kernel routes of gefyra's egress on the
// developer's side, over netlink: the agent container routes the
// cluster's networks into its TUN device (Device), and the network
// namespace every local container of `gefyra run` lives in routes them to
// the agent (Via). Both need CAP_NET_ADMIN in their network namespace;
// they exist on Linux only (elsewhere they fail).
package route
