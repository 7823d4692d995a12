package target

import (
	"net/netip"
	"testing"
	"time"
)

func TestFailLimiterBounded(t *testing.T) {
	var l failLimiter
	l.init(3, time.Minute, 100)
	now := time.Unix(1000, 0)
	for i := range 10000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.fail(a, now)
		if l.size() > 100 {
			t.Fatalf("limiter holds %d addresses, limit 100", l.size())
		}
	}
	a := netip.MustParseAddr("192.0.2.1")
	for range 3 {
		if !l.allow(a, now) {
			t.Fatal("refused before the burst was used")
		}
		l.fail(a, now)
	}
	if l.allow(a, now) {
		t.Fatal("allowed after the burst")
	}
	if !l.allow(a, now.Add(61*time.Second)) {
		t.Fatal("no token back after the refill interval")
	}
	// IPv6 addresses of one /64 share a bucket.
	b1, b2 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:2")
	for range 3 {
		l.fail(b1, now)
	}
	if l.allow(b2, now) {
		t.Fatal("another address of the same /64 not limited")
	}
	if !l.allow(netip.MustParseAddr("2001:db8:0:1::1"), now) {
		t.Fatal("another /64 limited")
	}
}
