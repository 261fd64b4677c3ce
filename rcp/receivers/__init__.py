"""
The main board's receivers: an FTP and an HTTP server that accept only
one-time grants, for the boards' log uploads and firmware downloads.

L{grants} issues and checks the credentials, L{store} writes the files,
L{http} and L{ftp} are the two protocols, L{service} starts them and
L{facade} is what the aggregator's policy talks to.
"""
