package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestParseForms(t *testing.T) {
	base, _ := url.Parse("http://127.0.0.1:4180/oauth2/sign_in?rd=%2F")
	tests := []struct {
		name       string
		html       string
		wantForms  int
		wantAction string
		wantMethod string
		wantFields url.Values
		wantInputs []Input
	}{
		{
			name:      "oauth2-proxy sign-in button",
			html:      `<form method="GET" action="/oauth2/start"><input type="hidden" name="rd" value="/items/1"><button type="submit">Sign in with OpenID Connect</button></form>`,
			wantForms: 1, wantAction: "http://127.0.0.1:4180/oauth2/start", wantMethod: "GET",
			wantFields: url.Values{"rd": {"/items/1"}}, wantInputs: []Input{{"rd", "hidden"}},
		},
		{
			name: "keycloak login form",
			html: `<form id="kc-form-login" action="http://10.96.100.10:8080/login" method="post">
				<input type="hidden" name="authRequestID" value="abc">
				<input id="username" name="username" type="text" value="">
				<input id="password" name="password" type="password">
				<input name="login" type="submit" value="Sign In"></form>`,
			wantForms: 1, wantAction: "http://10.96.100.10:8080/login", wantMethod: "POST",
			wantFields: url.Values{"authRequestID": {"abc"}, "username": {""}, "password": {""}},
			wantInputs: []Input{{"authRequestID", "hidden"}, {"username", "text"}, {"password", "password"}},
		},
		{
			name: "relative action, default method, controls",
			html: `<form action="next"><input name="a"><input type="checkbox" name="c" value="on" checked><input type="checkbox" name="d" value="on">
				<select name="s"><option value="1">one</option><option value="2" selected>two</option></select><textarea name="t"> hi </textarea></form>`,
			wantForms: 1, wantAction: "http://127.0.0.1:4180/oauth2/next", wantMethod: "GET",
			wantFields: url.Values{"a": {""}, "c": {"on"}, "s": {"2"}, "t": {"hi"}},
			wantInputs: []Input{{"a", "text"}, {"c", "checkbox"}, {"d", "checkbox"}, {"s", "select"}, {"t", "textarea"}},
		},
		{name: "no forms", html: `<p>{"Hello":"World"}</p>`, wantForms: 0},
		{name: "unparsable action", html: `<form action="http://[::1:x/" method="delete"><input name=a value=1>`, wantForms: 1, wantAction: base.String(), wantMethod: "GET", wantFields: url.Values{"a": {"1"}}},
		{name: "garbage", html: "<<<form\x00 action=>", wantForms: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forms := parseForms(base, []byte(tc.html))
			if len(forms) != tc.wantForms {
				t.Fatalf("%d forms, want %d: %+v", len(forms), tc.wantForms, forms)
			}
			if tc.wantForms == 0 {
				return
			}
			f := forms[0]
			if f.Action.String() != tc.wantAction || f.Method != tc.wantMethod {
				t.Errorf("action %s %s, want %s %s", f.Method, f.Action, tc.wantMethod, tc.wantAction)
			}
			if f.Fields.Encode() != tc.wantFields.Encode() {
				t.Errorf("fields %v, want %v", f.Fields, tc.wantFields)
			}
			if tc.wantInputs != nil && fmt.Sprint(f.Inputs) != fmt.Sprint(tc.wantInputs) {
				t.Errorf("inputs %v, want %v", f.Inputs, tc.wantInputs)
			}
		})
	}
}

// site is a small app behind a login, shaped like oauth2-proxy in front of
// an identity provider: "/" shows a sign-in button until the session cookie
// is set; the button leads through a redirect to a password form.
func site(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie("session"); err == nil && c.Value == "john" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"Hello":"World"}`)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `<form method="GET" action="/oauth2/start"><input type="hidden" name="rd" value="%s"><button>Sign in</button></form>`, r.URL.Path)
	})
	mux.HandleFunc("/oauth2/start", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/idp/login?next="+url.QueryEscape(r.URL.Query().Get("rd")), http.StatusFound)
	})
	mux.HandleFunc("/idp/login", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		msg := ""
		if r.Method == http.MethodPost {
			if r.PostFormValue("username") == "john@gefyra.dev" && r.PostFormValue("password") == "pw" {
				http.SetCookie(w, &http.Cookie{Name: "session", Value: "john", Path: "/"})
				http.Redirect(w, r, r.PostFormValue("next"), http.StatusFound)
				return
			}
			msg = `<span id="input-error">Invalid username or password.</span>`
		}
		fmt.Fprintf(w, `%s<form action="/idp/login" method="post"><input type="hidden" name="next" value="%s">
			<input name="username" type="text"><input name="password" type="password"></form>`, msg, r.FormValue("next"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestLogin(t *testing.T) {
	srv := site(t)
	tests := []struct {
		name     string
		password string
		wantErr  string
	}{
		{name: "right password", password: "pw"},
		{name: "wrong password", password: "nope", wantErr: "Invalid username or password."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New(Options{})
			page, err := b.Login(context.Background(), srv.URL+"/", "john@gefyra.dev", tc.password)
			if tc.wantErr != "" {
				var le *LoginError
				if !errors.As(err, &le) || le.Message != tc.wantErr {
					t.Fatalf("err = %v, want a LoginError %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if page.Status != 200 || page.Text() != `{"Hello":"World"}` {
				t.Fatalf("ended on %s: %d %q", page.URL, page.Status, page.Body)
			}
			// The session persists for later requests.
			page, err = b.Get(context.Background(), srv.URL+"/")
			if err != nil || page.Status != 200 {
				t.Fatalf("second visit: %v %+v", err, page)
			}
		})
	}
}

func TestLoginLoops(t *testing.T) {
	// A sign-in button that leads back to itself never finishes.
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<form action="/oauth2/start"></form>`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	_, err := New(Options{MaxSteps: 3}).Login(context.Background(), srv.URL, "u", "p")
	if err == nil || !strings.Contains(err.Error(), "within 3 steps") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoginFormWithoutUsername(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<form method="post"><input type="password" name="pin"></form>`)
	}))
	defer srv.Close()
	if _, err := New(Options{}).Login(context.Background(), srv.URL, "u", "p"); err == nil || !strings.Contains(err.Error(), "no username") {
		t.Fatalf("err = %v", err)
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name, html, want string
	}{
		{name: "keycloak", html: `<div class="alert-error">x</div><span id="input-error"> Invalid  username </span>`, want: "Invalid username"},
		{name: "class", html: `<p class="is-error">Bad <b>thing</b></p>`, want: "Bad thing"},
		{name: "none", html: `<p>fine</p>`, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := (&Page{Body: []byte(tc.html)}).ErrorMessage(); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func FuzzParseForms(f *testing.F) {
	f.Add(`<form id="kc-form-login" action="/login" method="post"><input name="username"><input type="password" name="password"></form>`)
	f.Add(`<form action="http://[::1]:x/"><select name=s><option>a</select></form>`)
	f.Add(`<form><form><input name=a></form></form>`)
	base, _ := url.Parse("http://127.0.0.1/x")
	f.Fuzz(func(t *testing.T, doc string) {
		for _, form := range parseForms(base, []byte(doc)) {
			if form.Action == nil || (form.Method != "GET" && form.Method != "POST") {
				t.Fatalf("bad form %+v", form)
			}
			for _, in := range form.Inputs {
				if in.Name == "" {
					t.Fatalf("unnamed input in %+v", form)
				}
			}
		}
		_ = (&Page{Body: []byte(doc)}).ErrorMessage()
	})
}
