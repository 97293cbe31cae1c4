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
	"slices"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// lazyAttrs keeps the attributes a logger is given with `With` and hands them to the text
// handler only for a record that is written. FerretDB logs every SQL statement at debug level
// under `With(arguments)`, and the text handler formats those arguments (whole documents) as
// soon as it is given them, even with debug off: 19 % of the server's CPU while inserting.
type lazyAttrs struct {
	next  slog.Handler
	attrs []slog.Attr
}

func (h lazyAttrs) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h lazyAttrs) Handle(ctx context.Context, record slog.Record) error {
	return h.flushed().Handle(ctx, record)
}

func (h lazyAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return lazyAttrs{next: h.next, attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h lazyAttrs) WithGroup(name string) slog.Handler {
	return lazyAttrs{next: h.flushed().WithGroup(name)}
}

func (h lazyAttrs) flushed() slog.Handler {
	if len(h.attrs) == 0 {
		return h.next
	}
	return h.next.WithAttrs(h.attrs)
}

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
	text := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})
	logger := slog.New(lazyAttrs{next: text})

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
