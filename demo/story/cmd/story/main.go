// Package main is command story, which tells the tutorial's story on the test world (`make demo`
// runs it through world/demo.sh): it builds and loads the images, deploys
// the workload, logs in as john@gefyra.dev and shows the bug, installs
// gefyra's add-on, runs the tutorial's gefyra commands, fixes the bug
// through the bridge and brings it back with gefyra down, one narrated step
// at a time, and removes what it deployed at the end. The world
// (world/world.sh up) and Docker Engine must be running.
//
// Exit status: 0 when every step passed, 1 when one failed, 130 when
// interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"gefyra.dev/gefyra/demo/appsrc"
	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/testworld"
)

func main() {
	os.Exit(run())
}

func run() int {
	root := flag.String("root", "", "the repository's root directory (default: the module of the working directory)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "story: unexpected arguments %q\n", flag.Args())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A second interrupt, while the cleanups run, ends the program at once.
	go func() { <-ctx.Done(); stop() }()

	start := time.Now()
	if *root == "" {
		r, err := appsrc.RepoRoot(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "story: %v (run it in the repository or pass -root)\n", err)
			return 1
		}
		*root = r
	}
	w, err := testworld.Open(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "story: the test world is not running: %v; %s\n", err, testworld.UpHint)
		return 1
	}
	r := story.NewRunner(ctx, os.Stdout)
	err = r.Run(story.Steps(story.New(w, *root)))
	if err == nil && ctx.Err() != nil {
		err = story.ErrInterrupted // while the cleanups ran
	}
	took := time.Since(start).Round(time.Second)
	switch {
	case errors.Is(err, story.ErrInterrupted):
		fmt.Fprintf(os.Stderr, "story: %v after %s\n", err, took)
		return 130
	case err != nil:
		fmt.Fprintf(os.Stderr, "story: FAILED after %s: %v\n", took, err)
		return 1
	}
	fmt.Printf("==> The story ran in %s\n", took)
	return 0
}
