package localagent

import (
	"context"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

func removeImage(t *testing.T, tag string) {
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return
	}
	defer api.Close()
	if _, err := api.ImageRemove(context.Background(), tag, image.RemoveOptions{Force: true}); err != nil && !strings.Contains(err.Error(), "No such image") {
		t.Logf("removing image %s: %v", tag, err)
	}
}
