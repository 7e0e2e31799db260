// Package expansion expands $(NAME) references the way Kubernetes does in
// a container's command, args and env values: it is how a Pod spec's
// strings become what kubelet runs, so code that reasons about a Pod (what
// a container will exec, what env it gets) expands them the same way.
package expansion

import "strings"

// Expand replaces each $(NAME) in s by lookup(NAME) where lookup knows
// NAME; an unknown reference stays as written, $$ is a literal $, and a $
// before anything else is kept.
func Expand(s string, lookup func(name string) (value string, ok bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
