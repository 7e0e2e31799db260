// Package browser is a small scripted web browser for the demo's login flow:
// it keeps cookies, follows redirects, finds HTML forms and submits them. It
// is what a person with a real browser does in the tutorial: open the app
// behind oauth2-proxy, press "Sign in with OpenID Connect", type the
// credentials into the identity provider's form and land back on the app.
package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/html"
)

// maxBodyBytes bounds the pages the browser reads.
const maxBodyBytes = 4 << 20

// Options configure a Browser.
type Options struct {
	// Transport carries the requests; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// Timeout bounds each request including redirects; 0 means 30 s.
	Timeout time.Duration
	// MaxSteps bounds the forms Login submits; 0 means 8.
	MaxSteps int
}

// Browser is a cookie-keeping HTTP client that follows redirects.
type Browser struct {
	client   *http.Client
	maxSteps int
}

// New returns a browser with an empty cookie jar.
func New(opts Options) *Browser {
	jar, _ := cookiejar.New(nil) // cookiejar.New never fails without options
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MaxSteps == 0 {
		opts.MaxSteps = 8
	}
	return &Browser{
		client: &http.Client{
			Transport: opts.Transport,
			Jar:       jar,
			Timeout:   opts.Timeout,
		},
		maxSteps: opts.MaxSteps,
	}
}

// Client returns the underlying HTTP client, sharing the browser's cookies.
func (b *Browser) Client() *http.Client { return b.client }

// Page is a fetched document after all redirects.
type Page struct {
	URL    *url.URL // where the redirects ended
	Status int
	Header http.Header
	Body   []byte
	Forms  []Form
}

// Text returns the body as a string.
func (p *Page) Text() string { return string(p.Body) }

// Form is an HTML form with its fields' current values.
type Form struct {
	ID     string
	Action *url.URL // absolute
	Method string   // GET or POST
	Fields url.Values
	// Inputs lists the form's named inputs in document order.
	Inputs []Input
}

// Input is one named form control.
type Input struct {
	Name, Type string
}

// Set sets a field's value.
func (f *Form) Set(name, value string) { f.Fields.Set(name, value) }

// HasPassword reports whether the form asks for a password.
func (f *Form) HasPassword() bool {
	for _, in := range f.Inputs {
		if in.Type == "password" {
			return true
		}
	}
	return false
}

// Get fetches url.
func (b *Browser) Get(ctx context.Context, rawURL string) (*Page, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	return b.Do(req)
}

// Do sends req with the browser's cookies, follows redirects and parses the
// resulting page's forms. A non-2xx status is not an error.
func (b *Browser) Do(req *http.Request) (*Page, error) {
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", resp.Request.URL, err)
	}
	if len(body) > maxBodyBytes {
		return nil, fmt.Errorf("%s: page larger than %d bytes", resp.Request.URL, maxBodyBytes)
	}
	p := &Page{URL: resp.Request.URL, Status: resp.StatusCode, Header: resp.Header, Body: body}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		p.Forms = parseForms(p.URL, body)
	}
	return p, nil
}

// Submit sends the form's fields to its action, as a browser does when the
// form's submit button is pressed.
func (b *Browser) Submit(ctx context.Context, f *Form) (*Page, error) {
	if f.Action == nil {
		return nil, errors.New("form has no action")
	}
	target := *f.Action
	var req *http.Request
	var err error
	if f.Method == http.MethodPost {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, target.String(), strings.NewReader(f.Fields.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		target.RawQuery = f.Fields.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	}
	if err != nil {
		return nil, err
	}
	return b.Do(req)
}

// LoginError is returned when the identity provider shows its login form
// again after the credentials were submitted.
type LoginError struct {
	URL     string
	Message string // the page's error text, if it has one
}

func (e *LoginError) Error() string {
	if e.Message == "" {
		return "login rejected at " + e.URL
	}
	return fmt.Sprintf("login rejected at %s: %s", e.URL, e.Message)
}

// Login opens rawURL and walks the OpenID Connect login: it presses the
// oauth2-proxy's sign-in button when it shows one, fills the first form that
// asks for a password with username and password, and returns the page the
// flow ends on (the application's, if the login worked). Cookies persist, so
// later requests through the browser are logged in.
func (b *Browser) Login(ctx context.Context, rawURL, username, password string) (*Page, error) {
	page, err := b.Get(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	submitted := false
	for range b.maxSteps {
		if f := page.signInButton(); f != nil {
			if page, err = b.Submit(ctx, f); err != nil {
				return nil, err
			}
			continue
		}
		f := page.passwordForm()
		if f == nil {
			return page, nil
		}
		if submitted {
			return page, &LoginError{URL: page.URL.String(), Message: page.ErrorMessage()}
		}
		if err := fillCredentials(f, username, password); err != nil {
			return page, err
		}
		submitted = true
		if page, err = b.Submit(ctx, f); err != nil {
			return nil, err
		}
	}
	return page, fmt.Errorf("login did not finish within %d steps (last page %s, status %d)", b.maxSteps, page.URL, page.Status)
}

// signInButton returns oauth2-proxy's "Sign in with ..." form.
func (p *Page) signInButton() *Form {
	for i := range p.Forms {
		if strings.HasSuffix(p.Forms[i].Action.Path, "/oauth2/start") {
			return &p.Forms[i]
		}
	}
	return nil
}

func (p *Page) passwordForm() *Form {
	for i := range p.Forms {
		if p.Forms[i].HasPassword() {
			return &p.Forms[i]
		}
	}
	return nil
}

// fillCredentials puts the username into the field named "username" (or the
// first text or e-mail field) and the password into the password field.
func fillCredentials(f *Form, username, password string) error {
	user, pass := "", ""
	for _, in := range f.Inputs {
		switch {
		case in.Type == "password" && pass == "":
			pass = in.Name
		case in.Name == "username":
			user = in.Name
		case (in.Type == "text" || in.Type == "email") && user == "":
			user = in.Name
		}
	}
	if user == "" || pass == "" {
		return fmt.Errorf("login form at %s has no username or password field", f.Action)
	}
	f.Set(user, username)
	f.Set(pass, password)
	return nil
}

// ErrorMessage returns the text of the page's error message: the element
// with id "input-error" (Keycloak's) or else the first element whose class
// mentions "error" or "alert".
func (p *Page) ErrorMessage() string {
	doc, err := html.Parse(strings.NewReader(string(p.Body)))
	if err != nil {
		return ""
	}
	var byID, byClass string
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			if attr(n, "id") == "input-error" && byID == "" {
				byID = textOf(n)
			}
			c := attr(n, "class")
			if byClass == "" && (strings.Contains(c, "error") || strings.Contains(c, "alert")) {
				byClass = textOf(n)
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if byID != "" {
		return byID
	}
	return byClass
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func textOf(n *html.Node) string {
	var sb strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			sb.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(sb.String()), " ")
}

// parseForms returns the forms of an HTML document, their actions resolved
// against base.
func parseForms(base *url.URL, body []byte) []Form {
	doc, err := html.Parse(strings.NewReader(string(body)))
	if err != nil {
		return nil
	}
	var forms []Form
	var cur *Form
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "form":
				action, err := base.Parse(attr(n, "action"))
				if err != nil {
					action = base
				}
				method := strings.ToUpper(attr(n, "method"))
				if method != http.MethodPost {
					method = http.MethodGet
				}
				forms = append(forms, Form{ID: attr(n, "id"), Action: action, Method: method, Fields: url.Values{}})
				cur = &forms[len(forms)-1]
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					walk(c)
				}
				cur = nil
				return
			case "input", "button", "select", "textarea":
				if cur != nil {
					addField(cur, n)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return forms
}

func addField(f *Form, n *html.Node) {
	name := attr(n, "name")
	if name == "" {
		return
	}
	typ := strings.ToLower(attr(n, "type"))
	switch n.Data {
	case "input":
		if typ == "" {
			typ = "text"
		}
		switch typ {
		case "submit", "button", "reset", "image", "file":
			return // only the pressed button is sent; Login presses none by name
		case "checkbox", "radio":
			if _, checked := findAttr(n, "checked"); !checked {
				f.Inputs = append(f.Inputs, Input{Name: name, Type: typ})
				return
			}
		}
		f.Fields.Add(name, attr(n, "value"))
	case "button":
		return
	case "textarea":
		typ = "textarea"
		f.Fields.Add(name, textOf(n))
	case "select":
		typ = "select"
		f.Fields.Add(name, selectedOption(n))
	}
	f.Inputs = append(f.Inputs, Input{Name: name, Type: typ})
}

func findAttr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func selectedOption(n *html.Node) string {
	first, chosen := "", ""
	found := false
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "option" {
			v, ok := findAttr(n, "value")
			if !ok {
				v = textOf(n)
			}
			if !found && first == "" {
				first = v
			}
			if _, sel := findAttr(n, "selected"); sel && !found {
				chosen, found = v, true
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	if found {
		return chosen
	}
	return first
}
