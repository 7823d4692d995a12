package scsi

// The reservation conflict table: for every operation code, what a
// persistent reservation (SPC-4 §5.13.1, table 66 "SPC commands that are
// allowed in the presence of various reservations"; SBC-4 §4.17, table
// 13) and an SPC-2 reservation (SPC-2 §5.5.1) let through from an I_T
// nexus that does not hold it. It lists the commands this device server
// implements and, by number, the ones other parts of the project add
// (EXTENDED COPY, RECEIVE COPY RESULTS, SANITIZE, WRITE ATOMIC). A unit
// test fails when an implemented opcode has no entry.

// prClass says how a command fares against a persistent reservation held
// by another I_T nexus.
type prClass uint8

const (
	// prUnlisted: no rule; never used for an implemented command.
	prUnlisted prClass = iota
	// prAllowed: allowed whatever the reservation (INQUIRY, REPORT LUNS,
	// TEST UNIT READY, READ CAPACITY, PERSISTENT RESERVE IN).
	prAllowed
	// prRead: allowed under the Write Exclusive types, a conflict under
	// the Exclusive Access types unless the nexus is a registrant of a
	// registrants only or all registrants reservation.
	prRead
	// prWrite: a conflict unless the nexus is a registrant of a
	// registrants only or all registrants reservation.
	prWrite
	// prRegister: PERSISTENT RESERVE OUT REGISTER (AND IGNORE EXISTING
	// KEY): always allowed (SPC-4 table 66).
	prRegister
	// prRegistered: PERSISTENT RESERVE OUT RELEASE, CLEAR, PREEMPT (AND
	// ABORT): allowed from a registered nexus.
	prRegistered
	// prHolder: PERSISTENT RESERVE OUT RESERVE and REGISTER AND MOVE: a
	// conflict for any non-holder.
	prHolder
	// prSPC2: RESERVE and RELEASE (6/10): a conflict whenever a
	// registration exists (SPC-4 §5.13.3).
	prSPC2
)

// prRule is one row of the table. spc2OK: allowed while another I_T
// nexus holds an SPC-2 reservation (SPC-2 §5.5.1: INQUIRY, REQUEST SENSE,
// REPORT LUNS, and RELEASE, which then does nothing).
type prRule struct {
	class  prClass
	spc2OK bool
}

// prRules is indexed by operation code. Service action opcodes and the
// commands whose class depends on CDB fields are refined by prRuleFor.
var prRules = [256]prRule{
	OpTestUnitReady:        {class: prAllowed},
	OpRequestSense:         {class: prAllowed, spc2OK: true},
	OpRead6:                {class: prRead},
	OpWrite6:               {class: prWrite},
	OpInquiry:              {class: prAllowed, spc2OK: true},
	OpModeSelect6:          {class: prWrite},
	OpReserve6:             {class: prSPC2},
	OpRelease6:             {class: prSPC2, spc2OK: true},
	OpModeSense6:           {class: prRead},
	OpStartStopUnit:        {class: prWrite}, // START=1 with POWER CONDITION 0: allowed (prRuleFor)
	OpPreventAllow:         {class: prWrite}, // PREVENT=0: allowed (prRuleFor)
	OpReadCapacity10:       {class: prAllowed},
	OpRead10:               {class: prRead},
	OpWrite10:              {class: prWrite},
	OpWriteAndVerify10:     {class: prWrite},
	OpVerify10:             {class: prRead},
	OpPreFetch10:           {class: prRead},
	OpSyncCache10:          {class: prWrite},
	OpReadDefectData10:     {class: prRead},
	OpWriteSame10:          {class: prWrite},
	OpUnmap:                {class: prWrite},
	OpReserve10:            {class: prSPC2},
	OpRelease10:            {class: prSPC2, spc2OK: true},
	OpModeSelect10:         {class: prWrite},
	OpModeSense10:          {class: prRead},
	OpPersistentReserveIn:  {class: prAllowed},
	OpPersistentReserveOut: {class: prHolder}, // by service action (prRuleFor)
	OpRead16:               {class: prRead},
	OpCompareAndWrite:      {class: prWrite},
	OpWrite16:              {class: prWrite},
	OpORWrite16:            {class: prWrite},
	OpWriteAndVerify16:     {class: prWrite},
	OpVerify16:             {class: prRead},
	OpPreFetch16:           {class: prRead},
	OpSyncCache16:          {class: prWrite},
	OpWriteSame16:          {class: prWrite},
	OpServiceActionIn:      {class: prRead}, // READ CAPACITY(16): allowed (prRuleFor)
	OpReportLUNs:           {class: prAllowed, spc2OK: true},
	OpMaintenanceIn:        {class: prRead}, // REPORT SUPPORTED OPERATION CODES / TMFs
	OpRead12:               {class: prRead},
	OpWrite12:              {class: prWrite},
	OpWriteAndVerify12:     {class: prWrite},
	OpVerify12:             {class: prRead},
	OpReadDefectData12:     {class: prRead},

	// Commands of other parts of the project or not implemented, so that
	// adding them cannot open a hole (SPC-4 table 66, SBC-4 table 13).
	0x04:       {class: prWrite}, // FORMAT UNIT
	0x1C:       {class: prRead},  // RECEIVE DIAGNOSTIC RESULTS
	0x1D:       {class: prWrite}, // SEND DIAGNOSTIC
	0x3B:       {class: prWrite}, // WRITE BUFFER
	0x3C:       {class: prRead},  // READ BUFFER
	0x48:       {class: prWrite}, // SANITIZE
	0x4C:       {class: prWrite}, // LOG SELECT
	OpLogSense: {class: prAllowed},
	0x83:       {class: prWrite}, // EXTENDED COPY
	0x84:       {class: prRead},  // RECEIVE COPY RESULTS
	0x85:       {class: prWrite}, // ATA PASS-THROUGH(16)
	0x8C:       {class: prRead},  // READ ATTRIBUTE
	0x8D:       {class: prWrite}, // WRITE ATTRIBUTE
	0x9C:       {class: prWrite}, // WRITE ATOMIC(16)
	0xA1:       {class: prWrite}, // ATA PASS-THROUGH(12)
	0xA2:       {class: prRead},  // SECURITY PROTOCOL IN
	0xA4:       {class: prWrite}, // MAINTENANCE OUT
	0xB5:       {class: prWrite}, // SECURITY PROTOCOL OUT
	0x7F:       {class: prWrite}, // variable length CDBs (WRITE(32) and others)
}

// prRuleFor returns the rule of a CDB: the table row, refined by service
// action or by the fields that decide the class.
func prRuleFor(cdb []byte) prRule {
	op := OpCode(cdb[0])
	r := prRules[op]
	switch op {
	case OpServiceActionIn:
		if len(cdb) > 1 && cdb[1]&saMask == SAReadCapacity16 {
			r.class = prAllowed
		}
	case OpMaintenanceIn:
		// REPORT IDENTIFYING INFORMATION, REPORT TARGET PORT GROUPS,
		// REPORT ALIASES, REPORT PRIORITY and REPORT TIMESTAMP are
		// allowed in every case; the REPORT SUPPORTED commands are reads.
		if len(cdb) > 1 {
			switch cdb[1] & saMask {
			case 0x05, 0x0A, 0x0B, 0x0E, 0x0F:
				r.class = prAllowed
			}
		}
	case OpPersistentReserveOut:
		if len(cdb) > 1 {
			switch cdb[1] & saMask {
			case SARegister, SARegisterIgnore:
				r.class = prRegister
			case SARelease, SAClear, SAPreempt, SAPreemptAndAbort:
				r.class = prRegistered
			}
		}
	case OpStartStopUnit:
		// START=1 with POWER CONDITION 0h and no eject only spins up.
		if len(cdb) > 4 && cdb[4]&0xF3 == 0x01 {
			r.class = prAllowed
		}
	case OpPreventAllow:
		if len(cdb) > 4 && cdb[4]&0x03 == 0 {
			r.class = prAllowed
		}
	}
	return r
}

// checkReservation applies the table to command c from its nexus. It runs
// in Plan, after the CDB is validated, and again just before Execute, so
// that a command planned before a PREEMPT cannot reach the medium after
// it. Without any reservation state it is one atomic load.
func (lu *LU) checkReservation(c *Command) error {
	s := lu.pr.cur.Load()
	if s == nil || s.idle() {
		return nil
	}
	k := nexusKeyOf(c.Nexus)
	r := prRuleFor(c.CDB)
	if s.spc2 != nil {
		op := OpCode(c.CDB[0])
		if *s.spc2 == k {
			// SPC-4 §5.13.3: persistent reservation commands conflict
			// with an SPC-2 reservation, even from its holder.
			if op == OpPersistentReserveIn || op == OpPersistentReserveOut {
				return ErrReservationConflict
			}
			return nil
		}
		if !r.spc2OK {
			return ErrReservationConflict
		}
		return nil
	}
	if r.class == prSPC2 {
		// Registrations exist (s is not idle and has no SPC-2 holder).
		return ErrReservationConflict
	}
	if s.resType == prTypeNone || s.isHolder(k) {
		return nil
	}
	registered := s.regFor(k) != nil
	regAccess := registered && s.resType.registrantsOnly()
	switch r.class {
	case prAllowed, prRegister:
		return nil
	case prRead:
		if regAccess || s.resType.writeExclusive() {
			return nil
		}
	case prWrite:
		if regAccess {
			return nil
		}
	case prRegistered:
		if registered {
			return nil
		}
	}
	// prHolder, and prUnlisted: an opcode without a rule conflicts.
	return ErrReservationConflict
}
