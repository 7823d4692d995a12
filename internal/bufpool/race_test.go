//go:build race

package bufpool

// raceEnabled: the race detector makes sync.Pool drop a random share of Put
// items on purpose, so allocation counts are meaningless under -race.
const raceEnabled = true
