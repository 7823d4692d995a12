// Command iscsi-target is a userspace iSCSI target daemon: it serves file-
// and block-device-backed LUNs to iSCSI initiators (RFC 7143) and lets only
// one initiator write a volume at a time.
//
// This package is the only one that reads flags, environment and signals;
// it wires the target, scsi and backstore packages together.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/urfave/cli/v2"
)

// Set by the build (-ldflags "-X main.version=...").
var version = "dev"

// exitError carries a process exit code through urfave/cli.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // bad flags or configuration
)

func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "iscsi-target",
		Usage: "a userspace iSCSI target for file- and block-backed LUNs",
		Commands: []*cli.Command{
			serveCommand(),
			sessionsCommand(),
			healthCommand(),
			reloadCommand(),
			lunCommand(),
			configCommand(),
			leaseCommand(),
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					fmt.Fprintf(c.App.Writer, "iscsi-target %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
					return nil
				},
			},
		},
		HideHelpCommand: true,
		// --lun specs contain commas; every repeatable flag is given once per value.
		DisableSliceFlagSeparator: true,
		ExitErrHandler:            func(*cli.Context, error) {},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return &exitError{code: exitUsage, err: err}
		},
	}
}

func main() {
	os.Exit(run(os.Args))
}

func run(args []string) int {
	err := newApp().Run(args)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(os.Stderr, "iscsi-target: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}
