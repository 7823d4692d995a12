package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/internal/config"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "check a configuration file or convert an ietd.conf",
		Subcommands: []*cli.Command{
			{
				Name:      "check",
				Usage:     "validate a configuration file (YAML or ietd.conf) and list every problem with its line",
				ArgsUsage: "FILE",
				Action:    configCheck,
			},
			{
				Name:      "import-ietd",
				Usage:     "print the YAML configuration equivalent to an ietd.conf",
				ArgsUsage: "IETD.CONF",
				Description: `Reads an ietd.conf and prints the equivalent YAML on standard output;
warnings and errors go to standard error with their line numbers. Access
lists: initiators.allow and initiators.deny next to the ietd.conf (or the
files given with --allow-file/--deny-file) are referenced from every target.
The output holds the CHAP secrets of the ietd.conf: write it to a file of
mode 0600.`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "allow-file", Usage: "ietd initiators.allow `FILE` (default: next to the ietd.conf, if present)"},
					&cli.StringFlag{Name: "deny-file", Usage: "ietd initiators.deny `FILE` (default: next to the ietd.conf, if present)"},
				},
				Action: configImportIETD,
			},
		},
	}
}

func oneArg(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", usageError("want one FILE argument")
	}
	return c.Args().First(), nil
}

// printDiags writes diagnostics as FILE:LINE:COL: severity: message.
func printDiags(c *cli.Context, name string, ds config.Diags) {
	for _, d := range ds {
		fmt.Fprintf(c.App.ErrWriter, "%s:%s\n", name, d)
	}
}

func configCheck(c *cli.Context) error {
	name, err := oneArg(c)
	if err != nil {
		return err
	}
	f, format, ds, err := config.Load(name)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	printDiags(c, name, ds)
	if n := len(ds.Errs()); n > 0 {
		return &exitError{code: exitUsage, err: fmt.Errorf("%s: %d error(s)", name, n)}
	}
	luns := 0
	for _, t := range f.Targets {
		luns += len(t.LUNs)
	}
	kind := "YAML"
	if format == config.FormatIETD {
		kind = "ietd.conf"
	}
	fmt.Fprintf(c.App.Writer, "%s: ok (%s, %d target(s), %d LUN(s), %d warning(s))\n", name, kind, len(f.Targets), luns, len(ds))
	return nil
}

// ietdACLFiles fills in the access list files of an imported ietd.conf.
func ietdACLFiles(conf, allow, deny string) (string, string) {
	dir := filepath.Dir(conf)
	if allow == "" {
		if p := filepath.Join(dir, "initiators.allow"); fileExists(p) {
			allow = p
		}
	}
	if deny == "" {
		if p := filepath.Join(dir, "initiators.deny"); fileExists(p) {
			deny = p
		}
	}
	return allow, deny
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// loadIETD parses an ietd.conf and its access list files.
func loadIETD(path, allow, deny string) (*config.File, config.Diags, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, nil, err
	}
	f, ds := config.ParseIETD(data)
	allow, deny = ietdACLFiles(path, allow, deny)
	if f != nil && (allow != "" || deny != "") {
		for i := range f.Targets {
			f.Targets[i].ACL.AllowFile = allow
			f.Targets[i].ACL.DenyFile = deny
		}
	}
	return f, ds, nil
}

func readConfigFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > config.MaxFileSize {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, config.MaxFileSize)
	}
	return os.ReadFile(path)
}

func configImportIETD(c *cli.Context) error {
	name, err := oneArg(c)
	if err != nil {
		return err
	}
	f, ds, err := loadIETD(name, c.String("allow-file"), c.String("deny-file"))
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	printDiags(c, name, ds)
	if n := len(ds.Errs()); n > 0 {
		return &exitError{code: exitUsage, err: fmt.Errorf("%s: %d error(s); nothing printed", name, n)}
	}
	out, err := config.Marshal(f)
	if err != nil {
		return &exitError{code: exitFailure, err: err}
	}
	fmt.Fprintf(c.App.Writer, "# Converted from %s by iscsi-target config import-ietd.\n", name)
	_, err = c.App.Writer.Write(out)
	return err
}
