# failures.awk: from a `go test -v` log, print what each failing test said.
#
# For each failing test and subtest: its t.Log/t.Error lines (FILE.go:LINE:
# and the next few lines, at most LIMIT lines), then the last TAIL lines it
# printed, so that the reason shows at the end of a long log, where CI shows
# it. A data race or panic report anywhere in a failing test's output is
# printed whole (up to RACE lines each, default 120): the race detector's
# "Found 1 data race(s)" at the end says nothing without it.
# Usage: awk -f test/failures.awk [-v LIMIT=40 -v TAIL=15 -v RACE=120] out/e2e.log
BEGIN { if (LIMIT == 0) LIMIT = 40; if (TAIL == 0) TAIL = 15; if (RACE == 0) RACE = 120 }
/^=== (RUN|CONT|NAME|PAUSE) / { cur = $3; if (!(cur in seen)) { seen[cur] = 1; order[++k] = cur }; next }
/^ *--- FAIL: / { failed[$3] = 1; next }
/^ *--- (PASS|SKIP): / { next }
/^(ok|FAIL|PASS)( |\t|$)/ { cur = ""; next }
cur != "" { n[cur]++; line[cur, n[cur]] = $0 }
END {
	for (i = 1; i <= k; i++) {
		t = order[i]
		if (!(t in failed)) continue
		c = n[t] + 0
		printf "----- %s (%d lines) -----\n", t, c
		shown = 0; follow = 0
		for (j = 1; j <= c && shown < LIMIT; j++) {
			l = line[t, j]
			if (l ~ /^    [A-Za-z0-9_]+\.go:[0-9]+: /) { follow = 4 } else if (follow > 0) { follow-- } else { continue }
			if (l ~ /level=/) continue
			print l; shown++
		}
		inrace = 0
		for (j = 1; j <= c; j++) {
			l = line[t, j]
			if (l ~ /WARNING: DATA RACE|^ *panic: |fatal error: /) { inrace = RACE; printf "  [report at line %d]\n", j }
			if (inrace > 0) { print l; inrace--; if (l ~ /^ *==================$/ && inrace < RACE - 1) inrace = 0 }
		}
		if (c > 0) {
			printf "  [last %d lines]\n", (c < TAIL ? c : TAIL)
			for (j = (c > TAIL ? c - TAIL + 1 : 1); j <= c; j++) print line[t, j]
		}
	}
}
