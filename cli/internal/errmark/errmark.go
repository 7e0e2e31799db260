// Package errmark makes errors that read as one plain sentence for the
// developer yet still match a sentinel with errors.Is, so the CLI can both
// print them as they are and react to their kind.
package errmark

import "fmt"

type marked struct {
	kind error
	msg  string
	err  error // the cause, if one was formatted with %w
}

func (e *marked) Error() string        { return e.msg }
func (e *marked) Is(target error) bool { return target == e.kind }
func (e *marked) Unwrap() error        { return e.err }

// New returns an error of kind whose message is format applied to args.
func New(kind error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &marked{kind: kind, msg: err.Error(), err: unwrapOne(err)}
}

func unwrapOne(err error) error {
	if u, ok := err.(interface{ Unwrap() error }); ok {
		return u.Unwrap()
	}
	return nil
}
