-- wrk script for the pipelined HTTP plaintext case: every write carries `depth` requests for
-- `path` back to back (HTTP/1.1 pipelining), and wrk counts each response it parses.
-- Usage: wrk -s bench/wrk/pipeline.lua http://127.0.0.1:PORT -- /plaintext 16
local batch

function init(args)
  local path = args[1] or "/plaintext"
  local depth = tonumber(args[2] or "16")
  local parts = {}
  for i = 1, depth do
    parts[i] = wrk.format("GET", path)
  end
  batch = table.concat(parts)
end

function request()
  return batch
end
