package main

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestBuildEnv(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []string
		notWant []string
	}{
		{name: "defaults", environ: []string{"PATH=/usr/local/go/bin"},
			want: []string{"PATH=/usr/local/go/bin", "GOTOOLCHAIN=local", "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOCACHE=/tmp/devloop/go-cache"}},
		{name: "image settings win", environ: []string{"GOCACHE=/tmp/go-cache", "GOFLAGS=-mod=readonly"},
			want: []string{"GOCACHE=/tmp/go-cache", "GOFLAGS=-mod=readonly"}, notWant: []string{"GOCACHE=/tmp/devloop/go-cache", "GOFLAGS=-mod=mod"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := buildEnv(tc.environ, "/tmp/devloop")
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("%v lacks %s", got, w)
				}
			}
			for _, w := range tc.notWant {
				if slices.Contains(got, w) {
					t.Errorf("%v has %s", got, w)
				}
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{name: "unknown flag", args: []string{"--reload"}, wantErr: "flag provided but not defined"},
		{name: "missing source", args: []string{"-dir", "/nonexistent/app"}, wantErr: "not a directory"},
		{name: "missing dlv", args: []string{"-dir", ".", "-module-dir", "../..", "-dlv", "/nonexistent/dlv"}, wantErr: "delve"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-work-dir", t.TempDir()}, tc.args...)
			err := run(context.Background(), args, func(k string) string { return tc.env[k] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
