package target

import (
	"context"
	"slices"

	"github.com/iscsi-target/iscsi-target/scsi"
)

// PREEMPT AND ABORT (SPC-4 §5.13.11.2.5): the device server removes the
// preempted registrations, then asks the transport to abort every task of
// those I_T nexuses on the LU, as CLEAR TASK SET from each would, and
// completes the PERSISTENT RESERVE OUT only when none of them is still
// executing. This is the scsi.TaskAborter NewServer installs on each
// node's Router. The tasks end with TASK ABORTED (TAS=1), like the other
// sessions' tasks of a LOGICAL UNIT RESET (tmf.go).
//
// I_T nexus loss and logout need nothing here: connLost already calls
// Router.NexusLost, which releases an SPC-2 reservation of the nexus and
// keeps its persistent registrations, as SPC-2 and SPC-4 require.

// preemptAborter returns the TaskAborter of node n.
func (srv *Server) preemptAborter(n *Node) scsi.TaskAborter {
	return func(_ context.Context, lun uint16, victims []scsi.NexusKey) {
		onLUN := func(t *task) bool {
			id, ok := scsi.DecodeLUN(t.lun)
			return ok && id == lun
		}
		var waits []abortWait
		srv.sessions.forNode(n, func(o *session) {
			if o.nexus != nil && slices.Contains(victims, o.nexus.Key) {
				waits = append(waits, o.markMatching(onLUN, abortReported))
			}
		})
		for _, w := range waits {
			w.s.waitAborted(w.seq, tmfWait)
		}
	}
}
