wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("REVIEW") or "/tmp/probe/review.json", "r")
wrk.body = f:read("*a")
f:close()
