package provider

import (
	"context"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
)

const loginPath = "/login"

// maxFormBytes bounds the login form body.
const maxFormBytes = 16 << 10

// login serves the username/password form the provider redirects to during
// the authorization code flow, shaped like Keycloak's (form id
// "kc-form-login", fields "username" and "password").
type login struct {
	store    *storage
	callback func(ctx context.Context, authRequestID string) string
	log      *slog.Logger
}

var loginPage = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sign in to gefyra</title>
<style>
body{font-family:sans-serif;background:#f0f0f0;display:flex;justify-content:center;margin-top:10vh}
#kc-content{background:#fff;padding:2em 3em;border-top:4px solid #0066cc;box-shadow:0 1px 4px #0003;min-width:20em}
label{display:block;margin-top:1em}input[type=text],input[type=password]{width:100%;padding:.4em}
#input-error{color:#c9190b;display:block;margin-top:1em}input[type=submit]{margin-top:1.5em;width:100%;padding:.5em;background:#0066cc;color:#fff;border:0}
</style>
</head>
<body>
<div id="kc-content">
<h1 id="kc-page-title">Sign in to your account</h1>
{{if .Error}}<span id="input-error" class="kc-feedback-text" aria-live="polite">{{.Error}}</span>{{end}}
<form id="kc-form-login" action="{{.Action}}" method="post">
<input type="hidden" name="authRequestID" value="{{.ID}}">
<label for="username">Username or email</label>
<input tabindex="1" id="username" name="username" type="text" value="{{.Username}}" autofocus autocomplete="username">
<label for="password">Password</label>
<input tabindex="2" id="password" name="password" type="password" autocomplete="current-password">
<input tabindex="4" name="login" id="kc-login" type="submit" value="Sign In">
</form>
</div>
</body>
</html>
`))

type loginData struct {
	Action, ID, Username, Error string
}

func (l *login) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	switch r.Method {
	case http.MethodGet:
		id := r.URL.Query().Get("authRequestID")
		if _, err := l.store.AuthRequestByID(r.Context(), id); err != nil {
			l.render(w, http.StatusBadRequest, loginData{Error: errLoginExpired.Error()})
			return
		}
		l.render(w, http.StatusOK, loginData{ID: id})
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			l.log.Warn("login form unreadable", "err", err)
			http.Error(w, "bad login form", http.StatusBadRequest)
			return
		}
		id := r.PostForm.Get("authRequestID")
		username := r.PostForm.Get("username")
		err := l.store.checkLogin(id, username, r.PostForm.Get("password"))
		switch {
		case errors.Is(err, errLoginExpired):
			l.log.Warn("login for an unknown or expired request", "username", username)
			l.render(w, http.StatusBadRequest, loginData{Error: err.Error()})
		case err != nil:
			l.log.Warn("login failed", "username", username, "err", err)
			// Keycloak answers a failed login with the form again and 200.
			l.render(w, http.StatusOK, loginData{ID: id, Username: username, Error: "Invalid username or password."})
		default:
			l.log.Info("login succeeded", "username", username)
			http.Redirect(w, r, l.callback(r.Context(), id), http.StatusFound)
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (l *login) render(w http.ResponseWriter, status int, d loginData) {
	d.Action = loginPath
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := loginPage.Execute(w, d); err != nil {
		l.log.Warn("render login page", "err", err)
	}
}
