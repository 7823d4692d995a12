package scsi

import "testing"

// --- SPC-2 RESERVE / RELEASE ---

func TestSPC2Reserve(t *testing.T) {
	for _, ten := range []bool{false, true} {
		reserve, release := []byte{byte(OpReserve6), 0, 0, 0, 0, 0}, []byte{byte(OpRelease6), 0, 0, 0, 0, 0}
		if ten {
			reserve = []byte{byte(OpReserve10), 0, 0, 0, 0, 0, 0, 0, 0, 0}
			release = []byte{byte(OpRelease10), 0, 0, 0, 0, 0, 0, 0, 0, 0}
		}
		e := newEnv(t, nil).login()
		good(t, e.run(reserve, nil, 0))
		good(t, e.run(reserve, nil, 0)) // the holder again
		conflict(t, e.runOn(e.nx2, 0, reserve, nil, 0))
		good(t, e.runOn(e.nx2, 0, release, nil, 0)) // no action
		conflict(t, e.runOn(e.nx2, 0, modeSense6(false, 0, 0x3F, 0, 255), nil, 255))
		conflict(t, e.runOn(e.nx2, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
		conflict(t, e.runOn(e.nx2, 0, cdb10(OpRead10, 0, 0, 1), nil, 512))
		good(t, e.runOn(e.nx2, 0, inquiryCDBBytes(false, 0, 96), nil, 96))
		good(t, e.runOn(e.nx2, 0, []byte{byte(OpReportLUNs), 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0}, nil, 64))
		good(t, e.runOn(e.nx2, 0, []byte{byte(OpRequestSense), 0, 0, 0, 18, 0}, nil, 18))
		// Persistent reservation commands conflict, even from the holder.
		conflict(t, e.prIn(e.nx, SAReadKeys, 100))
		conflict(t, e.prOut(e.nx, SARegister, 0, 0, 1, 0))
		good(t, e.run(cdb10(OpWrite10, 0, 0, 1), fill(512, 9), 0))
		good(t, e.run(release, nil, 0))
		good(t, e.runOn(e.nx2, 0, reserve, nil, 0))
		good(t, e.runOn(e.nx2, 0, release, nil, 0))
	}
}

func TestSPC2ReleasedByNexusLossAndReset(t *testing.T) {
	reserve := []byte{byte(OpReserve6), 0, 0, 0, 0, 0}
	e := newEnv(t, nil).login()
	good(t, e.run(reserve, nil, 0))
	e.r.NexusLost(e.nx)
	good(t, e.runOn(e.nx2, 0, reserve, nil, 0))
	if err := e.r.LogicalUnitReset(EncodeLUN(0)); err != nil {
		t.Fatal(err)
	}
	e.r.NexusAdded(e.nx)
	ua(t, e, e.nx, ASCPowerOnResetOccurred)
	good(t, e.run(reserve, nil, 0))
	e.r.TargetReset(false)
	ua(t, e, e.nx2, ASCSCSIBusResetOccurred)
	good(t, e.runOn(e.nx2, 0, reserve, nil, 0))
	// A replaced nexus's late loss report does not release the new one's.
	newer := &Nexus{Key: e.nx2.Key}
	e.r.NexusAdded(newer)
	e.r.NexusLost(e.nx2)
	ua(t, e, e.nx, ASCSCSIBusResetOccurred)
	conflict(t, e.run(reserve, nil, 0))
}

func TestSPC2AndPersistentReservations(t *testing.T) {
	e := newEnv(t, nil).login()
	good(t, e.prOut(e.nx, SARegister, 0, 0, 0xA, 0))
	// With a registration, RESERVE and RELEASE conflict for everyone.
	conflict(t, e.run([]byte{byte(OpReserve6), 0, 0, 0, 0, 0}, nil, 0))
	conflict(t, e.runOn(e.nx2, 0, []byte{byte(OpRelease10), 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0))
	good(t, e.prOut(e.nx, SARegister, 0, 0xA, 0, 0))
	good(t, e.run([]byte{byte(OpReserve6), 0, 0, 0, 0, 0}, nil, 0))
}
