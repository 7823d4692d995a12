package main

// Admin routes and commands for configuration changes: reload and
// lun resize.

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/urfave/cli/v2"

	"github.com/iscsi-target/iscsi-target/internal/config"
)

// resizeRequest asks the daemon to re-read (and with Size, grow) a LUN.
type resizeRequest struct {
	Target string `json:"target"`
	LUN    uint16 `json:"lun"`
	Size   int64  `json:"size,omitempty"`
}

type resizeResponse struct {
	Blocks    uint64 `json:"blocks"`
	BlockSize uint32 `json:"block_size"`
	Bytes     uint64 `json:"bytes"`
}

// opsRoutes registers the reload and resize routes of d.
func (d *daemon) opsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, _ *http.Request) {
		res, err := d.reload()
		if err != nil {
			adminError(w, http.StatusBadRequest, "%v", err)
			return
		}
		adminJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /v1/lun/resize", func(w http.ResponseWriter, r *http.Request) {
		var req resizeRequest
		if err := adminDecode(r, &req); err != nil {
			adminError(w, http.StatusBadRequest, "bad request: %v", err)
			return
		}
		blocks, bs, err := d.resize(req.Target, req.LUN, req.Size)
		if err != nil {
			adminError(w, http.StatusBadRequest, "%v", err)
			return
		}
		adminJSON(w, http.StatusOK, resizeResponse{Blocks: blocks, BlockSize: bs, Bytes: blocks * uint64(bs)})
	})
}

func reloadCommand() *cli.Command {
	return &cli.Command{
		Name:  "reload",
		Usage: "make the daemon re-read its configuration file (as SIGHUP does) and print what changed",
		Flags: append(adminFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: func(c *cli.Context) error {
			var res reloadResult
			if err := adminCall(c.Context, adminSocketPath(c), http.MethodPost, "/v1/reload", nil, &res); err != nil {
				return &exitError{code: exitFailure, err: fmt.Errorf("reload refused: %w", err)}
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			w := c.App.Writer
			for _, l := range []struct {
				what string
				list []string
			}{
				{"added target", res.AddedTargets}, {"removed target", res.RemovedTargets},
				{"changed target", res.ChangedTargets}, {"added LUN", res.AddedLUNs},
				{"removed LUN", res.RemovedLUNs}, {"resized LUN", res.Resized}, {"warning", res.Warnings},
			} {
				for _, x := range l.list {
					fmt.Fprintf(w, "%s: %s\n", l.what, x)
				}
			}
			if res.ClosedSessions > 0 {
				fmt.Fprintf(w, "closed sessions: %d\n", res.ClosedSessions)
			}
			fmt.Fprintln(w, "reloaded")
			return nil
		},
	}
}

func lunCommand() *cli.Command {
	return &cli.Command{
		Name:  "lun",
		Usage: "operate on the daemon's LUNs",
		Subcommands: []*cli.Command{{
			Name:  "resize",
			Usage: "grow a LUN's backing file (--size) or re-read its size after growing the device; initiators see CAPACITY DATA HAS CHANGED",
			Flags: append(adminFlags(),
				&cli.StringFlag{Name: "target", Usage: "target `IQN`", Required: true},
				&cli.UintFlag{Name: "lun", Usage: "LUN `N`", Required: true},
				&cli.StringFlag{Name: "size", Usage: "new `SIZE` of a file-backed LUN (512MiB, 4GiB, 1TB); only growing is allowed"},
			),
			Action: func(c *cli.Context) error {
				req := resizeRequest{Target: c.String("target")}
				if n := c.Uint("lun"); n > config.MaxLUNID {
					return usageError("--lun %d: at most %d", n, config.MaxLUNID)
				} else {
					req.LUN = uint16(n)
				}
				if s := c.String("size"); s != "" {
					v, err := config.ParseSize(s)
					if err != nil {
						return usageError("--size: %v", err)
					}
					req.Size = v
				}
				var res resizeResponse
				if err := adminCall(c.Context, adminSocketPath(c), http.MethodPost, "/v1/lun/resize", req, &res); err != nil {
					return &exitError{code: exitFailure, err: err}
				}
				fmt.Fprintf(c.App.Writer, "%s LUN %d: %d blocks of %d bytes (%s)\n", req.Target, req.LUN, res.Blocks, res.BlockSize,
					config.FormatSize(int64(res.Bytes)))
				return nil
			},
		}},
	}
}
