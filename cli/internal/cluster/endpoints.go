package cluster

import (
	"context"
	"fmt"
	"slices"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NotRouted lists the Pods of pods (names, in namespace) that an
// EndpointSlice lists as not ready, each with its Service: that Service
// sends them nothing until they are ready there again (and kube-proxy has
// caught up). A bridge restarts a container of each Pod it mounts, which
// takes the Pod out of its Services for a moment.
func (c *Cluster) NotRouted(ctx context.Context, namespace string, pods []string) ([]string, error) {
	list, err := c.Kube.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" || !slices.Contains(pods, ep.TargetRef.Name) {
				continue
			}
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				out = append(out, fmt.Sprintf("Pod %s in Service %s", ep.TargetRef.Name, s.Labels[discoveryv1.LabelServiceName]))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
