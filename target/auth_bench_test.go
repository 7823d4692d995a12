package target_test

import (
	"strconv"
	"testing"

	"github.com/iscsi-target/iscsi-target/chap"
	"github.com/iscsi-target/iscsi-target/target/targettest"
)

// BenchmarkCHAPLogin measures a whole login over loopback (TCP connect,
// CHAP security stage with mutual CHAP, operational stage) per algorithm,
// against a login with AuthMethod=None.
func BenchmarkCHAPLogin(b *testing.B) {
	tg := chapTarget(b, nil)
	plain := targettest.Start(b, targettest.Options{})
	for _, a := range append([]chap.Algorithm{0}, chap.DefaultAlgorithms()...) {
		name := "None"
		if a != 0 {
			name = a.String()
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				var c *targettest.Client
				var err error
				if a == 0 {
					c, err = targettest.Dial(plain.Addr)
					if err == nil {
						err = c.Login(targettest.LoginOptions{Target: plain.IQN})
					}
				} else {
					c, err = targettest.Dial(tg.Addr)
					if err == nil {
						err = c.Login(targettest.LoginOptions{Target: tg.IQN, CHAP: &targettest.CHAP{
							User: initUser, Secret: initSecret, Algorithms: strconv.Itoa(int(a)),
							TargetUser: targetUser, TargetSecret: targetSecret}})
					}
				}
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
