package main

import (
	"testing"
	"time"
)

func TestSettingsFrom(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		runs    int
		dur     time.Duration
		skip    string
		wantErr bool
	}{
		{name: "defaults", runs: 5, dur: 5 * time.Second},
		{name: "quick", env: map[string]string{"BENCH_QUICK": "1"}, runs: 1, dur: 2 * time.Second},
		{name: "overrides", env: map[string]string{"BENCH_RUNS": "3", "BENCH_DURATION": "10s", "BENCH_SKIP": "tunnel, h2"}, runs: 3, dur: 10 * time.Second, skip: "tunnel"},
		{name: "bad runs", env: map[string]string{"BENCH_RUNS": "0"}, wantErr: true},
		{name: "bad duration", env: map[string]string{"BENCH_DURATION": "5"}, wantErr: true},
		{name: "short duration", env: map[string]string{"BENCH_DURATION": "10ms"}, wantErr: true},
		{name: "unknown skip", env: map[string]string{"BENCH_SKIP": "everything"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := settingsFrom(nil, func(k string) string { return tc.env[k] })
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want an error, got %+v", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.runs != tc.runs || s.duration != tc.dur || (tc.skip != "" && !s.skip[tc.skip]) {
				t.Fatalf("got %+v", s)
			}
		})
	}
}
