"""scan: the offline analyser behind `sshguardd scan` (a tool: uses detect/, bans/ and
the journal reader, never the daemon).

Modules: textio (decoded chunks of syslog text, the year of classic timestamps), fastpath
(the chunk scanner), inputs (files, export streams, journals; scan_all), parallel (--jobs),
report (the JSON lines printer and the --summary of what the policy would ban).
"""
