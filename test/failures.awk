# failures.awk: from a `go test -v` log, print what each failing test printed.
#
# A failing test's own lines (the last LIMIT of them) and, for each failing
# subtest, its first LIMIT lines, so that the reason is at the end of a long
# log, where CI shows it. Usage: awk -f test/failures.awk [-v LIMIT=60] out/e2e.log
BEGIN { if (LIMIT == 0) LIMIT = 60 }
/^=== (RUN|CONT|NAME) / { cur = $3; if (!(cur in n)) { order[++k] = cur } ; next }
/^ *--- FAIL: / { failed[$3] = 1; next }
/^ *--- (PASS|SKIP): / { next }
/^(ok|FAIL|PASS)( |\t|$)/ { cur = ""; next }
cur != "" { n[cur]++; line[cur, n[cur]] = $0 }
END {
	for (i = 1; i <= k; i++) {
		t = order[i]
		if (!(t in failed)) continue
		top = (index(t, "/") == 0)
		c = n[t] + 0
		from = 1; to = c
		if (top && c > LIMIT) from = c - LIMIT + 1
		if (!top && c > LIMIT) to = LIMIT
		printf "----- %s (%d lines%s) -----\n", t, c, (to - from + 1 < c ? ", shortened" : "")
		for (j = from; j <= to; j++) print line[t, j]
	}
}
