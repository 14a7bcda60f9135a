"""The time bounds of a batch run over servers, in seconds (one home: the client, the runner and the
command line's defaults read them here; importing this module costs nothing)."""

#: to open a connection, and to wait for the answer to one request (control requests are quick)
CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 10.0
#: an upload's whole bound grows with its size (a slow link is not a silent server)
UPLOAD_SECONDS_PER_MB = 4.0
#: between probes of a server set aside (it rejoins when it answers)
PROBE_EVERY = 15.0
#: with no usable server, no job running and no answer, before the waiting jobs fail
SERVER_WAIT = 30.0
#: for ComfyUI to write a finished prompt's /history record
HISTORY_WAIT = 30.0
