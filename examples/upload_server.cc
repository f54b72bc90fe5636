// upload_server — streaming request bodies (http::router::stream, http::body_reader).
//
//   PUT or POST /upload → 200 "bytes=<n> crc32=<8 hex digits>\n": the body (Content-Length or
//   chunked) is checksummed piece by piece as it is read and never held whole, so an upload of
//   any size costs this server one connection's input buffer. Bodies over --max-body get 413.
//   Other paths → 404.
//
// Usage: upload_server [--port P] [--loops N] [--max-body BYTES] [--help]
// Prints "listening on <port>" (flushed) once bound; exits 0 on SIGINT/SIGTERM.
//
//   curl -T big.iso http://127.0.0.1:8080/upload
//   curl -H 'Transfer-Encoding: chunked' --data-binary @big.iso http://127.0.0.1:8080/upload
#include <zlib.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "evnet/http/server.h"
#include "http_example.h"

namespace {

void usage(const char* argv0) {
  std::printf(
      "usage: %s [--port P] [--loops N] [--max-body BYTES] [--help]\n"
      "  --port P          listen on 0.0.0.0:P (0 = any free port; default 8080)\n"
      "  --loops N         reactor threads (0 = one per core; default 1)\n"
      "  --max-body BYTES  largest upload accepted, 413 beyond (default: no limit)\n"
      "PUT/POST /upload -> 'bytes=<n> crc32=<hex>', the body checksummed as it streams in.\n"
      "Prints 'listening on <port>' once bound.\n",
      argv0);
}

// Checksums one upload as it arrives.
class checksum_reader : public evnet::http::body_reader {
 public:
  void on_data(std::string_view piece, evnet::http::response& /*early*/) override {
    bytes_ += piece.size();
    // zlib takes a uInt length: feed a huge piece in slices.
    while (!piece.empty()) {
      const auto n = static_cast<uInt>(piece.size() < (1u << 30) ? piece.size() : (1u << 30));
      crc_ = crc32(crc_, reinterpret_cast<const Bytef*>(piece.data()), n);
      piece.remove_prefix(n);
    }
  }
  void on_end(const evnet::http::request& /*req*/, evnet::http::response& res) override {
    char text[64];
    std::snprintf(text, sizeof text, "bytes=%llu crc32=%08lx\n",
                  static_cast<unsigned long long>(bytes_), crc_);
    res.start(200).header("Content-Type", "text/plain").body(text);
  }

 private:
  std::uint64_t bytes_ = 0;
  uLong crc_ = crc32(0L, Z_NULL, 0);
};

bool parse_number(const char* s, unsigned long long max, unsigned long long& out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max) {
    return false;
  }
  out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned long long port = 8080;
  unsigned long long loops = 1;
  unsigned long long max_body = UINT64_MAX;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(argv[0]);
      return 0;
    }
    unsigned long long* into = a == "--port"       ? &port
                               : a == "--loops"    ? &loops
                               : a == "--max-body" ? &max_body
                                                   : nullptr;
    if (into == nullptr) {
      std::fprintf(stderr, "unknown argument: %s\n", argv[i]);
      usage(argv[0]);
      return 2;
    }
    const std::string v = example::value_of(argc, argv, i);
    if (!parse_number(v.c_str(), a == "--port" ? 65535 : UINT64_MAX, *into)) {
      std::fprintf(stderr, "bad value for %s: %s\n", a.c_str(), v.c_str());
      return 2;
    }
  }

  evnet::http::router r;
  auto start_upload = [](const evnet::http::request& /*req*/, evnet::http::response& /*res*/)
      -> std::unique_ptr<evnet::http::body_reader> { return std::make_unique<checksum_reader>(); };
  r.stream(evnet::http::method::put, "/upload", start_upload);
  r.stream(evnet::http::method::post, "/upload", start_upload);

  evnet::http::server_options opts;
  opts.max_stream_body_bytes = max_body;
  return example::serve_http("upload_server", std::move(r), opts, port, loops);
}
