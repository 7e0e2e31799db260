// Package main is command httpserver: the local container of the CLI's tests: a static
// HTTP server for an image FROM scratch that reports what it was started
// with, so a test sees that `gefyra run` passed argv, environment and bind
// mounts, and that bridged requests arrive with their headers.
package main

import (
	"encoding/json"
	"flag"
	"net/http"
	"os"
)

func main() {
	listen := flag.String("listen", ":8155", "address to listen on")
	greeting := flag.String("greeting", "hello", "greeting to report")
	flag.Parse()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		host, _ := os.Hostname()
		reply := map[string]any{
			"greeting": *greeting,
			"args":     os.Args,
			"host":     host,
			"path":     r.URL.Path,
			"token":    r.Header.Get("X-Forwarded-Access-Token"),
		}
		if name := r.URL.Query().Get("env"); name != "" {
			reply["env"] = os.Getenv(name)
		}
		if file := r.URL.Query().Get("file"); file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				reply["fileError"] = err.Error()
			}
			reply["file"] = string(b)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(reply)
	})
	if err := http.ListenAndServe(*listen, nil); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
