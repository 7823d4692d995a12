package main

// The lease commands: show and force-release the single-writer lease of
// the daemon's targets through the admin socket.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/target"
)

// leaseReleaseRequest is the body of POST /v1/lease/release.
type leaseReleaseRequest struct {
	Target string `json:"target"`
}

// leaseReleaseAnswer is its answer.
type leaseReleaseAnswer struct {
	Released bool             `json:"released"`
	Lease    target.LeaseInfo `json:"lease"`
}

// leaseRoutes adds the lease routes to the admin handler.
func leaseRoutes(mux *http.ServeMux, srv *target.Server) {
	mux.HandleFunc("GET /v1/lease", func(w http.ResponseWriter, r *http.Request) {
		if t := r.URL.Query().Get("target"); t != "" {
			li, err := srv.Lease(t)
			if err != nil {
				adminError(w, http.StatusNotFound, "%v", err)
				return
			}
			adminJSON(w, http.StatusOK, []target.LeaseInfo{li})
			return
		}
		adminJSON(w, http.StatusOK, srv.Leases())
	})
	leaseAction(mux, "POST /v1/lease/release", srv.ReleaseLease)
	leaseAction(mux, "POST /v1/lease/allow", srv.AllowLease)
}

// leaseAction serves a lease operation on one target.
func leaseAction(mux *http.ServeMux, route string, op func(string) (target.LeaseInfo, bool, error)) {
	mux.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) {
		var req leaseReleaseRequest
		if err := adminDecode(r, &req); err != nil {
			adminError(w, http.StatusBadRequest, "bad request: %v", err)
			return
		}
		li, released, err := op(req.Target)
		switch {
		case errors.Is(err, target.ErrNoSuchTarget):
			adminError(w, http.StatusNotFound, "%v", err)
		case err != nil && !released:
			adminError(w, http.StatusConflict, "%v", err)
		case err != nil:
			adminError(w, http.StatusInternalServerError, "%v", err)
		default:
			adminJSON(w, http.StatusOK, leaseReleaseAnswer{Released: released, Lease: li})
		}
	})
}

func leaseCommand() *cli.Command {
	return &cli.Command{
		Name:  "lease",
		Usage: "show or release the single-writer lease of the daemon's targets",
		Subcommands: []*cli.Command{
			{
				Name:  "show",
				Usage: "print holder, epoch, live sessions and fenced nexuses",
				Flags: append(adminFlags(),
					&cli.StringFlag{Name: "target", Usage: "only target `IQN`"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON"}),
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return usageError("lease show: unexpected arguments %q", c.Args().Slice())
					}
					route := "/v1/lease"
					if t := c.String("target"); t != "" {
						route += "?target=" + url.QueryEscape(t)
					}
					var list []target.LeaseInfo
					if err := adminCall(c.Context, adminSocketPath(c), http.MethodGet, route, nil, &list); err != nil {
						return &exitError{code: exitFailure, err: err}
					}
					if c.Bool("json") {
						enc := json.NewEncoder(c.App.Writer)
						enc.SetIndent("", "  ")
						return enc.Encode(list)
					}
					for i, li := range list {
						if i > 0 {
							fmt.Fprintln(c.App.Writer)
						}
						printLease(c.App.Writer, li)
					}
					return nil
				},
			},
			{
				Name:  "allow",
				Usage: "let the initiator a release barred take the free lease again",
				Flags: append(adminFlags(),
					&cli.StringFlag{Name: "target", Usage: "target `IQN` (required)"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON"}),
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 || c.String("target") == "" {
						return usageError("lease allow: --target IQN is required, and nothing else")
					}
					ans, done, err := leasePost(c, "/v1/lease/allow")
					if done || err != nil {
						return err
					}
					if !ans.Released {
						fmt.Fprintf(c.App.Writer, "no initiator is barred from %s\n", ans.Lease.Target)
						return nil
					}
					fmt.Fprintf(c.App.Writer, "the released initiator may take the lease of %s again\n", ans.Lease.Target)
					return nil
				},
			},
			{
				Name:  "release",
				Usage: "drop the lease holder by force and fence it (only when its node is known to be down)",
				Description: `Fences every session of the current holder (they are closed, their
   commands aborted, and their nexuses refused from now on) and leaves the
   lease free for the next other initiator that logs in: the released
   initiator itself may take it again only after another one held it, or
   after 'iscsi-target lease allow'. Use it when the holder's node is down
   or cut off for good, as Kubernetes' out-of-service taint does.`,
				Flags: append(adminFlags(),
					&cli.StringFlag{Name: "target", Usage: "target `IQN` (required)"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON"}),
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return usageError("lease release: unexpected arguments %q", c.Args().Slice())
					}
					if c.String("target") == "" {
						return usageError("lease release: --target IQN is required")
					}
					ans, done, err := leasePost(c, "/v1/lease/release")
					if done || err != nil {
						return err
					}
					if !ans.Released {
						fmt.Fprintf(c.App.Writer, "lease of %s was already free (epoch %d)\n", ans.Lease.Target, ans.Lease.Epoch)
						return nil
					}
					fmt.Fprintf(c.App.Writer, "lease of %s released (epoch %d); fenced nexuses: %d\n",
						ans.Lease.Target, ans.Lease.Epoch, len(ans.Lease.Fenced))
					return nil
				},
			},
		},
	}
}

func printLease(w io.Writer, li target.LeaseInfo) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "target:\t%s\n", li.Target)
	fmt.Fprintf(tw, "access:\t%s\n", li.Access)
	if li.Access == target.AccessSingleWriter {
		holder := "(free)"
		if li.Holder != "" {
			holder = li.Holder
			if !li.HolderAlive {
				holder += " (no live session: free for the next login)"
			}
		}
		fmt.Fprintf(tw, "holder:\t%s\n", holder)
		fmt.Fprintf(tw, "epoch:\t%d\n", li.Epoch)
		if li.Barred != "" {
			fmt.Fprintf(tw, "barred:\t%s (released by the operator)\n", li.Barred)
		}
		if !li.Since.IsZero() {
			fmt.Fprintf(tw, "since:\t%s\n", li.Since.UTC().Format(time.RFC3339))
		}
		if !li.GraceUntil.IsZero() {
			fmt.Fprintf(tw, "restart grace until:\t%s\n", li.GraceUntil.UTC().Format(time.RFC3339Nano))
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "sessions: %d\n", len(li.Sessions))
	if len(li.Sessions) > 0 {
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  INITIATOR\tISID\tTSIH\tREMOTE\tALIVE")
		for _, s := range li.Sessions {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%v\n", s.InitiatorName, s.ISID, s.TSIH, s.RemoteAddr, s.Alive)
		}
		_ = tw.Flush()
	}
	fmt.Fprintf(w, "fenced nexuses: %d\n", len(li.Fenced))
	if len(li.Fenced) > 0 {
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  INITIATOR\tISID\tEPOCH\tSINCE")
		for _, f := range li.Fenced {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", f.InitiatorName, f.ISID, f.Epoch, f.Since.UTC().Format(time.RFC3339))
		}
		_ = tw.Flush()
	}
	k := li.Counters
	fmt.Fprintf(w, "counters: acquired=%d takeovers=%d released=%d fenced=%d refused_busy=%d refused_fenced=%d persist_errors=%d\n",
		k.Acquired, k.Takeovers, k.Released, k.Fenced, k.RefusedBusy, k.RefusedFenced, k.PersistErrors)
}

// leasePost sends the command's --target to route and, with --json, prints
// the answer (done reports that nothing is left to print).
func leasePost(c *cli.Context, route string) (ans leaseReleaseAnswer, done bool, err error) {
	if err := adminCall(c.Context, adminSocketPath(c), http.MethodPost, route,
		leaseReleaseRequest{Target: c.String("target")}, &ans); err != nil {
		return ans, true, &exitError{code: exitFailure, err: err}
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return ans, true, enc.Encode(ans)
	}
	return ans, false, nil
}
