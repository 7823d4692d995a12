package target

import "testing"

func TestAllocTSIHSkipsInUseAndZero(t *testing.T) {
	var tab sessionTable
	tab.init()
	tab.lastTS = 0xfffe
	tab.byT[0xffff] = &session{}
	tab.byT[1] = &session{}
	got, ok := tab.allocTSIH()
	if !ok || got != 2 {
		t.Fatalf("got %d %v, want 2 (0xffff and 1 in use, 0 reserved)", got, ok)
	}
	// Exhaustion: every non-zero TSIH in use.
	for i := 1; i < 1<<16; i++ {
		tab.byT[uint16(i)] = &session{}
	}
	if _, ok := tab.allocTSIH(); ok {
		t.Fatal("allocated a TSIH with all 65535 in use")
	}
	// Releasing one makes it available again.
	delete(tab.byT, 4242)
	if got, ok := tab.allocTSIH(); !ok || got != 4242 {
		t.Fatalf("got %d %v after releasing 4242", got, ok)
	}
}

func TestSerialLess(t *testing.T) {
	cases := []struct {
		a, b uint32
		want bool
	}{
		{1, 2, true}, {2, 1, false}, {5, 5, false},
		{0xffffffff, 0, true}, {0, 0xffffffff, false}, // wrap-around
		{0x7fffffff, 0x80000000, true},
	}
	for _, tc := range cases {
		if got := serialLess(tc.a, tc.b); got != tc.want {
			t.Errorf("serialLess(%#x, %#x) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestNegotiation(t *testing.T) {
	o := Offer{HeaderDigests: []string{"CRC32C", "None"}, DataDigests: []string{"None"},
		MaxRecvDataSegmentLength: 262144, MaxBurstLength: 1 << 20, FirstBurstLength: 262144,
		MaxOutstandingR2T: 8, DefaultTime2Wait: 2, DefaultTime2Retain: 20}
	cases := []struct {
		key, in, want string
		discovery     bool
	}{
		{"HeaderDigest", "None,CRC32C", "None", false},
		{"HeaderDigest", "CRC32C,None", "CRC32C", false},
		{"DataDigest", "CRC32C", "Reject", false},
		{"MaxRecvDataSegmentLength", "8192", "262144", false},
		{"MaxRecvDataSegmentLength", "100", "Reject", false},
		{"MaxBurstLength", "16776192", "1048576", false},
		{"FirstBurstLength", "65536", "65536", false},
		{"MaxOutstandingR2T", "1", "1", false},
		{"MaxOutstandingR2T", "0", "Reject", false},
		{"InitialR2T", "Yes", "Yes", false},
		{"InitialR2T", "No", "No", false},
		{"ImmediateData", "Yes", "Yes", false},
		{"ImmediateData", "maybe", "Reject", false},
		{"MaxConnections", "4", "1", false},
		{"ErrorRecoveryLevel", "2", "0", false},
		{"DefaultTime2Wait", "0", "2", false},
		{"DefaultTime2Retain", "60", "20", false},
		{"DataPDUInOrder", "No", "Yes", false},
		{"DataSequenceInOrder", "No", "Yes", false},
		{"IFMarker", "Yes", "No", false},
		{"OFMarkInt", "2048~8192", "Reject", false},
		{"iSCSIProtocolLevel", "2", "1", false},
		{"X-com.example.Vendor", "1", "NotUnderstood", false},
		{"MaxBurstLength", "65536", "Irrelevant", true},
		{"ImmediateData", "Yes", "Irrelevant", true},
	}
	for _, tc := range cases {
		n := newNegotiator(o)
		got, err := n.operationalKey(tc.key, tc.in, tc.discovery)
		if err != nil || got != tc.want {
			t.Errorf("%s=%s (discovery %v): got %q, %v; want %q", tc.key, tc.in, tc.discovery, got, err, tc.want)
		}
	}
	n := newNegotiator(o)
	if _, err := n.operationalKey("MaxBurstLength", "65536", false); err != nil {
		t.Fatal(err)
	}
	if _, err := n.operationalKey("MaxBurstLength", "65536", false); err == nil {
		t.Fatal("a key negotiated twice was accepted")
	}
	// FirstBurstLength never exceeds MaxBurstLength in the result.
	n = newNegotiator(o)
	n.operationalKey("MaxBurstLength", "4096", false)
	n.operationalKey("FirstBurstLength", "65536", false)
	if p := n.finish(); p.FirstBurstLength != 4096 {
		t.Fatalf("FirstBurstLength %d with MaxBurstLength 4096", p.FirstBurstLength)
	}
}
