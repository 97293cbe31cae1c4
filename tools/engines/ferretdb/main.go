// Command ferretdb-embedded serves the MongoDB wire protocol on a TCP address, storing data in
// SQLite files under a directory, by embedding FerretDB v1. It exists so that the Weather Tweets
// tests and laptops can talk to a real MongoDB-wire server without Docker.
//
//	ferretdb-embedded -listen 127.0.0.1:27018 -dir /path/to/data
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27018", "TCP address to serve")
	dir := flag.String("dir", "ferretdb-data", "directory of the SQLite files")
	level := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()

	var logLevel slog.Level
	if err := logLevel.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "bad -log-level:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))

	abs, err := filepath.Abs(*dir)
	if err == nil {
		err = os.MkdirAll(abs, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "data directory:", err)
		os.Exit(1)
	}

	server, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("ferretdb-embedded: serving mongodb://%s/ from %s\n", *listen, abs)
	if err := server.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		os.Exit(1)
	}
}
