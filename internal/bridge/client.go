package bridge

import (
	"fmt"
	"regexp"
	"strings"
)

// ClientNamespace is where GefyraClient resources live.
const ClientNamespace = "gefyra"

// clientNameReplacer turns the characters that Kubernetes user names commonly
// hold but object names may not into '-'. The cluster's admission policy
// computes the same with CEL (deploy/rbac/developer-policy.yaml):
//
//	request.userInfo.username.lowerAscii().replace('@', '-').replace(':', '-')
//	  .replace('_', '-').replace('+', '-').replace('/', '-').replace(' ', '-')
var clientNameReplacer = strings.NewReplacer("@", "-", ":", "-", "_", "-", "+", "-", "/", "-", " ", "-")

var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// ClientName is the name of the GefyraClient that Kubernetes user user owns:
// one per developer, so the name follows from who asks. It fails for a user
// name that does not become a valid object name.
func ClientName(user string) (string, error) {
	lower := make([]byte, len(user))
	for i := 0; i < len(user); i++ {
		c := user[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	name := clientNameReplacer.Replace(string(lower))
	if len(name) > 253 || !dnsSubdomain.MatchString(name) {
		return "", fmt.Errorf("user name %q does not give a valid client name (%q): it must become lowercase letters, digits, '-' and '.'", user, name)
	}
	return name, nil
}
