// Package shellwords splits a command line into argv the way a POSIX shell
// would quote it, without running a shell: `gefyra run -c "CMD"` must start
// images that have none (FROM scratch). Single quotes, double quotes and
// backslashes work as in sh; what only a shell could do (pipes, redirection,
// lists, variable and command substitution) is an error that says so, so a
// command is never silently passed on with a literal `&&` in its argv.
package shellwords

import (
	"fmt"
	"strings"
)

// Split returns the words of s. It fails on an unterminated quote or
// escape and on shell syntax that needs a shell to mean anything.
func Split(s string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		inArg bool // a word has begun (even an empty '' one)
	)
	flush := func() {
		if inArg {
			args = append(args, cur.String())
			cur.Reset()
			inArg = false
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			flush()
		case c == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("command %q ends with a lone backslash", s)
			}
			i++
			if s[i] == '\n' { // line continuation
				continue
			}
			cur.WriteByte(s[i])
			inArg = true
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("command %q has an unterminated single quote", s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inArg = true
		case c == '"':
			i++
			closed := false
			for ; i < len(s); i++ {
				d := s[i]
				if d == '"' {
					closed = true
					break
				}
				if d == '\\' && i+1 < len(s) {
					switch s[i+1] {
					case '"', '\\', '$', '`':
						i++
						cur.WriteByte(s[i])
						continue
					case '\n':
						i++
						continue
					}
				}
				if d == '$' || d == '`' {
					return nil, needsShell(s, string(d))
				}
				cur.WriteByte(d)
			}
			if !closed {
				return nil, fmt.Errorf("command %q has an unterminated double quote", s)
			}
			inArg = true
		case strings.IndexByte("|&;<>()$`", c) >= 0:
			return nil, needsShell(s, string(c))
		case c == '#' && !inArg:
			return nil, needsShell(s, "#")
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	flush()
	return args, nil
}

func needsShell(s, what string) error {
	return fmt.Errorf("command %q uses %q, which only a shell understands, and no shell runs it: "+
		"quote it, or run a shell yourself, e.g. -c \"sh -c '...'\"", s, what)
}

// Join quotes args so that Split gives them back.
func Join(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(Quote(a))
	}
	return b.String()
}

// Quote returns s as one word: as it is when that is safe, else in single
// quotes.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_./:=,+@%^", c) >= 0) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
