// HTTP router path patterns: `:name` segments, `*name` catch-alls, precedence independent of
// the order routes were added, 404 versus 405, the query string, refused registrations, and the
// same through the server over real sockets on 127.0.0.1.
#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "evnet/engine.h"
#include "evnet/error.h"
#include "evnet/http/parser.h"
#include "evnet/http/server.h"
#include "http_server_test_util.h"
#include "http_test_util.h"

namespace http = evnet::http;
using namespace std::chrono_literals;
using proto_test::client;
using proto_test::read_replies;
using proto_test::test_server;

namespace {

// A handler that does nothing but carries a name, so a test can tell which route find()
// returned (std::function::target gives the functor back).
struct tagged {
  std::string tag;
  void operator()(const http::request&, http::response&) const {}
};

std::string tag_of(const http::route_handler* h) {
  if (h == nullptr) {
    return "";
  }
  const tagged* t = h->target<tagged>();
  return t ? t->tag : "(untagged)";
}

// "name=value;name=value" in capture order.
std::string params_text(const http::route_params& p) {
  std::string out;
  for (const auto& e : p) {
    if (!out.empty()) {
      out += ';';
    }
    out += std::string(e.name) + "=" + std::string(e.value);
  }
  return out;
}

struct route_def {
  http::method method;
  const char* path;
  const char* tag;
};

// The routes of the matching table. Their order matters to nothing: the table is run against
// the list as written, reversed, and shuffled.
const std::vector<route_def> kRoutes = {
    {http::method::get, "/plaintext", "plaintext"},
    {http::method::get, "/users/new", "users_new"},
    {http::method::get, "/users/:id", "user"},
    {http::method::post, "/users/:id", "user_post"},
    {http::method::get, "/users/:id/posts/:post", "user_posts"},
    {http::method::get, "/users/*rest", "users_rest"},
    {http::method::get, "/static/*path", "static"},
    {http::method::get, "/a/:x/c", "a_x_c"},
    {http::method::get, "/a/b/:y", "a_b_y"},
    {http::method::get, "/c/x/y/:z", "c_x_y_z"},
    {http::method::get, "/c/:p/w", "c_p_w"},
    {http::method::get, "/dir/:name/", "dir_slash"},
    {http::method::post, "/submit", "submit"},
};

http::router make_router(const std::vector<route_def>& defs) {
  http::router r;
  for (const auto& d : defs) {
    r.add(d.method, d.path, tagged{d.tag});
  }
  return r;
}

struct match_case {
  const char* request_line;  // "METHOD target"
  const char* tag;           // expected route, "" for none
  int status;                // expected status when no route (404/405); 200 when one
  const char* params;        // expected captures, "name=value;..." in pattern order
};

const std::vector<match_case> kCases = {
    // Exact routes, as before patterns.
    {"GET /plaintext", "plaintext", 200, ""},
    {"GET /plaintext?x=1&y=/users/1", "plaintext", 200, ""},
    {"POST /plaintext", "", 405, ""},
    {"GET /plaintext/", "", 404, ""},
    // Exact beats :param beats *catch-all.
    {"GET /users/new", "users_new", 200, ""},
    {"GET /users/42", "user", 200, "id=42"},
    {"GET /users/42?tab=a/b", "user", 200, "id=42"},
    {"GET /users/42/posts/7", "user_posts", 200, "id=42;post=7"},
    {"GET /users/42/other", "users_rest", 200, "rest=42/other"},
    {"GET /users/42/posts", "users_rest", 200, "rest=42/posts"},
    {"GET /users/42/posts/7/x", "users_rest", 200, "rest=42/posts/7/x"},
    // Trailing slash is significant: `:id` needs a non-empty segment and nothing after it.
    {"GET /users/42/", "users_rest", 200, "rest=42/"},
    {"GET /users/", "users_rest", 200, "rest="},
    {"GET /users", "", 404, ""},
    {"GET /dir/x/", "dir_slash", 200, "name=x"},
    {"GET /dir/x", "", 404, ""},
    // Precedence is per method: POST has only the pattern, so it takes /users/new too.
    {"POST /users/new", "user_post", 200, "id=new"},
    {"POST /users/42", "user_post", 200, "id=42"},
    {"DELETE /users/42", "", 405, ""},
    // RFC 9110 §9.1: a method the server does not recognise is 501, wherever it is sent (it
    // was 405 where another method was routed, 404 elsewhere).
    {"BREW /users/42", "", 501, ""},
    {"BREW /plaintext", "", 501, ""},
    {"BREW /nothing", "", 501, ""},
    {"POST /users/42/posts/7", "", 405, ""},
    {"HEAD /users/42", "", 405, ""},  // the server falls back to GET; the router does not
    // Catch-all: may be empty, must follow a '/', keeps inner slashes, excludes the query.
    {"GET /static/", "static", 200, "path="},
    {"GET /static/css/a.css", "static", 200, "path=css/a.css"},
    {"GET /static/css/a.css?v=3", "static", 200, "path=css/a.css"},
    {"GET /static//x", "static", 200, "path=/x"},
    {"GET /static", "", 404, ""},
    {"POST /static/x", "", 405, ""},
    // Literal before parameter at the first segment where two patterns differ.
    {"GET /a/b/c", "a_b_y", 200, "y=c"},
    {"GET /a/z/c", "a_x_c", 200, "x=z"},
    {"GET /a/b/d", "a_b_y", 200, "y=d"},
    {"GET /a/z/d", "", 404, ""},
    // Backtracking: the literal branch x/y/... dead-ends, the :p branch matches.
    {"GET /c/x/y/1", "c_x_y_z", 200, "z=1"},
    {"GET /c/x/w", "c_p_w", 200, "p=x"},
    {"GET /c/q/w", "c_p_w", 200, "p=q"},
    {"GET /c/x/y", "", 404, ""},
    // Exact routes with another method still make 405, patterns or not.
    {"GET /submit", "", 405, ""},
    {"GET /nothing", "", 404, ""},
    {"GET /", "", 404, ""},
};

// Parses "METHOD target" as a real request so the router sees exactly what the server passes it
// (message::path: the target up to '?').
class parsed_request {
 public:
  explicit parsed_request(std::string_view line) {
    raw_ = std::string(line) + " HTTP/1.1\r\nHost: x\r\n\r\n";
    auto st = parser_.parse(raw_);
    ok_ = st.event == http::parse_event::head;
  }
  bool ok() const { return ok_; }
  const http::message& message() const { return parser_.message(); }

 private:
  std::string raw_;
  http::request_parser parser_;
  bool ok_ = false;
};

void run_table(const http::router& r) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.request_line);
    parsed_request req(c.request_line);
    ASSERT_TRUE(req.ok());
    const http::message& m = req.message();
    int status = 0;
    http::route_params params;
    const http::route_handler* h = r.find(m.method, m.path, status, params);
    EXPECT_EQ(tag_of(h), c.tag);
    if (h == nullptr) {
      EXPECT_EQ(status, c.status);
      EXPECT_TRUE(params.empty());
    } else {
      EXPECT_EQ(200, c.status) << "table error";
    }
    EXPECT_EQ(params_text(params), c.params);
    // Values are views into the request target, not copies.
    for (const auto& e : params) {
      if (!e.value.empty()) {
        EXPECT_GE(e.value.data(), m.target.data());
        EXPECT_LE(e.value.data() + e.value.size(), m.target.data() + m.target.size());
      }
    }
    // The overload without params agrees.
    int status2 = 0;
    EXPECT_EQ(r.find(m.method, m.path, status2), h);
    if (h == nullptr) {
      EXPECT_EQ(status2, status);
    }
  }
}

TEST(http_router, table_routes_added_in_written_order) {
  run_table(make_router(kRoutes));
}

TEST(http_router, table_routes_added_in_reverse_order) {
  auto defs = kRoutes;
  std::reverse(defs.begin(), defs.end());
  run_table(make_router(defs));
}

TEST(http_router, table_routes_added_in_shuffled_orders) {
  auto defs = kRoutes;
  std::mt19937 rng(12345);  // fixed seed: a failure is reproducible
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::shuffle(defs.begin(), defs.end(), rng);
    run_table(make_router(defs));
  }
}

TEST(http_router, copied_router_matches_the_same) {
  // The WebSocket server copies its router; a copy must own its tree.
  http::router original = make_router(kRoutes);
  http::router copy = original;
  original = http::router{};
  run_table(copy);
}

TEST(http_router, param_lookup_by_name_tells_absent_from_empty) {
  http::router r;
  r.get("/users/:id/files/*path", tagged{"f"});
  int status = 0;
  http::route_params p;
  ASSERT_EQ(tag_of(r.find(http::method::get, "/users/9/files/", status, p)), "f");
  bool found = false;
  EXPECT_EQ(p.get("id", &found), "9");
  EXPECT_TRUE(found);
  EXPECT_EQ(p.get("path", &found), "");
  EXPECT_TRUE(found) << "an empty catch-all is present, not absent";
  EXPECT_EQ(p.get("nope", &found), "");
  EXPECT_FALSE(found);
  // An exact route empties what a previous pattern match left.
  r.get("/exact", tagged{"e"});
  ASSERT_EQ(tag_of(r.find(http::method::get, "/exact", status, p)), "e");
  EXPECT_TRUE(p.empty());
}

TEST(http_router, eight_params_accepted_nine_refused) {
  http::router r;
  r.get("/:a/:b/:c/:d/:e/:f/:g/:h", tagged{"eight"});
  int status = 0;
  http::route_params p;
  ASSERT_EQ(tag_of(r.find(http::method::get, "/1/2/3/4/5/6/7/8", status, p)), "eight");
  EXPECT_EQ(params_text(p), "a=1;b=2;c=3;d=4;e=5;f=6;g=7;h=8");
  EXPECT_THROW(r.get("/x/:a/:b/:c/:d/:e/:f/:g/:h/:i", tagged{"nine"}), std::invalid_argument);
}

// Each refused registration: add() throws std::invalid_argument naming the route, try_add()
// returns errc::invalid_argument with the same reason, and the router is left unchanged.
struct conflict_case {
  std::vector<route_def> before;  // accepted first
  route_def refused;
  const char* reason_part;  // must appear in the message
  const char* probe;        // a request that must not match anything afterwards ("" = none)
};

TEST(http_router, conflicting_registrations_are_refused) {
  const std::vector<conflict_case> cases = {
      {{{http::method::get, "/users/:id", "a"}},
       {http::method::get, "/users/:name/posts", "b"},
       ":id",
       "GET /users/1/posts"},
      {{{http::method::get, "/users/:id/posts", "a"}},
       {http::method::post, "/users/:uid", "b"},
       ":uid",
       "POST /users/1"},
      {{}, {http::method::get, "/static/*rest/more", "b"}, "last segment", "GET /static/x/more"},
      {{}, {http::method::get, "/static/*rest/", "b"}, "last segment", "GET /static/x/"},
      {{{http::method::get, "/a", "a"}}, {http::method::get, "/a", "b"}, "already", ""},
      {{{http::method::get, "/u/:id", "a"}}, {http::method::get, "/u/:id", "b"}, "already", ""},
      {{{http::method::get, "/s/*p", "a"}}, {http::method::get, "/s/*p", "b"}, "already", ""},
      {{{http::method::get, "/s/*p", "a"}}, {http::method::post, "/s/*q", "b"}, "*p", "POST /s/x"},
      {{}, {http::method::get, "/u/:", "b"}, "name", ""},
      {{}, {http::method::get, "/u/*", "b"}, "name", ""},
      {{}, {http::method::get, "/files/:name.txt", "b"}, "name", "GET /files/a.txt"},
      {{}, {http::method::get, "/u/:id/x/:id", "b"}, "twice", "GET /u/1/x/2"},
      {{}, {http::method::get, "/u/:id/x/*id", "b"}, "twice", "GET /u/1/x/2"},
      {{}, {http::method::get, "users/:id", "b"}, "start with '/'", ""},
      {{}, {http::method::other, "/a", "b"}, "never matched", ""},
      {{}, {http::method::other, "/u/:id", "b"}, "never matched", ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.refused.path));
    http::router r;
    for (const auto& d : c.before) {
      r.add(d.method, d.path, tagged{d.tag});
    }
    try {
      r.add(c.refused.method, c.refused.path, tagged{c.refused.tag});
      ADD_FAILURE() << "add() accepted a conflicting route";
    } catch (const std::invalid_argument& e) {
      std::string what = e.what();
      EXPECT_NE(what.find(c.refused.path), std::string::npos) << what;
      EXPECT_NE(what.find(c.reason_part), std::string::npos) << what;
    }
    std::string why;
    std::error_code ec = r.try_add(c.refused.method, c.refused.path, tagged{"again"}, &why);
    EXPECT_EQ(ec, evnet::errc::invalid_argument);
    EXPECT_NE(why.find(c.reason_part), std::string::npos) << why;
    // Nothing of the refused route was kept.
    if (*c.probe != '\0') {
      parsed_request req(c.probe);
      ASSERT_TRUE(req.ok());
      int status = 0;
      EXPECT_EQ(r.find(req.message().method, req.message().path, status), nullptr);
    }
    // The earlier routes still work.
    for (const auto& d : c.before) {
      int status = 0;
      http::route_params p;
      std::string path = d.path;
      for (auto& ch : path) {
        if (ch == ':' || ch == '*') {
          ch = 'v';
        }
      }
      EXPECT_EQ(tag_of(r.find(d.method, path, status, p)), d.tag) << path;
    }
  }
}

TEST(http_router, same_pattern_other_method_and_shared_prefix_accepted) {
  http::router r;
  EXPECT_FALSE(r.try_add(http::method::get, "/u/:id", tagged{"g"}));
  EXPECT_FALSE(r.try_add(http::method::post, "/u/:id", tagged{"p"}));
  EXPECT_FALSE(r.try_add(http::method::get, "/u/:id/x", tagged{"x"}));
  EXPECT_FALSE(r.try_add(http::method::get, "/u/*rest", tagged{"r"}));
  EXPECT_FALSE(r.try_add(http::method::post, "/u/*rest", tagged{"pr"}));
  int status = 0;
  http::route_params p;
  EXPECT_EQ(tag_of(r.find(http::method::post, "/u/1", status, p)), "p");
  EXPECT_EQ(tag_of(r.find(http::method::post, "/u/1/2", status, p)), "pr");
}

TEST(http_router, colon_or_star_inside_a_segment_is_literal_and_star_path_exact) {
  http::router r;
  r.get("/a:b/c*d", tagged{"lit"});
  r.add(http::method::options, "*", tagged{"star"});
  int status = 0;
  EXPECT_EQ(tag_of(r.find(http::method::get, "/a:b/c*d", status)), "lit");
  EXPECT_EQ(r.find(http::method::get, "/axb/cxd", status), nullptr);
  EXPECT_EQ(status, 404);
  EXPECT_EQ(tag_of(r.find(http::method::options, "*", status)), "star");
}

TEST(http_router, upgrade_paths_are_exact_only) {
  http::router r;
  r.upgrade("/ws/:room", [](evnet::conn&, const http::message&, std::string&) {
    return std::unique_ptr<http::upgraded_protocol>{};
  });
  EXPECT_EQ(r.find_upgrade("/ws/lobby"), nullptr);
  EXPECT_NE(r.find_upgrade("/ws/:room"), nullptr);
  int status = 0;
  EXPECT_EQ(r.find(http::method::get, "/ws/lobby", status), nullptr);
  EXPECT_EQ(status, 404);
}

// ---------------- through the server, over real sockets ----------------

// Every handler answers with its name and what it read through request::param.
http::router socket_router() {
  http::router r;
  // Patterns first, the exact route last: precedence must not depend on the order.
  r.get("/users/:id", [](const http::request& req, http::response& res) {
    res.start(200)
        .header("Content-Type", "text/plain")
        .body("user " + std::string(req.param("id")));
  });
  r.get("/users/:id/posts/:post", [](const http::request& req, http::response& res) {
    res.start(200).header("Content-Type", "text/plain");
    res.body("user " + std::string(req.param("id")) + " post " + std::string(req.param("post")));
  });
  r.get("/static/*path", [](const http::request& req, http::response& res) {
    bool found = false;
    std::string path(req.param("path", &found));
    res.start(200).header("Content-Type", "text/plain");
    res.body("static [" + path + "] " + (found ? "found" : "absent"));
  });
  r.post("/forms/:id", [](const http::request& req, http::response& res) {
    res.start(200).body("form " + std::string(req.param("id")) + " " + std::string(req.body));
  });
  r.get("/users/new", [](const http::request& req, http::response& res) {
    bool found = true;
    (void)req.param("id", &found);
    res.start(200).body(found ? "exact route saw a param" : "new user form");
  });
  return r;
}

TEST(http_router, socket_users_42_param_in_body) {
  test_server s(socket_router());
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.ok());
  // Pipelined on one keep-alive connection: each response must carry its own request's params.
  ASSERT_TRUE(
      c.send("GET /users/42 HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /users/7?id=99 HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /users/new HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /users/42/posts/abc HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /static/css/site.css?v=2 HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /static/ HTTP/1.1\r\nHost: x\r\n\r\n"
             "POST /forms/5 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"));
  auto r = read_replies(c, 7);
  ASSERT_EQ(r.size(), 7u);
  for (const auto& rep : r) {
    EXPECT_EQ(rep.status, 200);
    EXPECT_TRUE(rep.keep_alive);
  }
  EXPECT_EQ(r[0].body, "user 42");
  EXPECT_EQ(r[1].body, "user 7") << "the query string is not part of the path";
  EXPECT_EQ(r[2].body, "new user form") << "the exact route wins and captures nothing";
  EXPECT_EQ(r[3].body, "user 42 post abc");
  EXPECT_EQ(r[4].body, "static [css/site.css] found");
  EXPECT_EQ(r[5].body, "static [] found");
  EXPECT_EQ(r[6].body, "form 5 body");
}

// RFC 9112 §3.2.2: the absolute form reaches the route its path names (it was routed on the
// whole target, "http://x/users/42", and answered 404).
TEST(http_router, socket_absolute_form_target_reaches_its_route) {
  test_server s(socket_router());
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(
      c.send("GET http://x/users/42 HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET HTTP://x:80/static/a.css?v=1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = read_replies(c, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].status, 200);
  EXPECT_EQ(r[0].body, "user 42");
  EXPECT_EQ(r[1].status, 200);
  EXPECT_EQ(r[1].body, "static [a.css] found");
}

// RFC 9112 §3.2: "*" is a target for OPTIONS only, and a target that is neither "/..." nor
// "scheme://..." is no target for GET: both were routed to handlers registered for such paths.
TEST(http_router, socket_target_forms_the_method_cannot_take_are_400) {
  http::router r;
  const auto answer = [](const http::request& req, http::response& res) {
    res.start(200).body("routed " + std::string(req.head.path));
  };
  r.get("*", answer);
  r.get("foo", answer);
  r.add(http::method::options, "*", answer);
  test_server s(std::move(r));
  ASSERT_GT(s.port(), 0);
  for (const char* line : {"GET * HTTP/1.1", "GET foo HTTP/1.1"}) {
    SCOPED_TRACE(line);
    client c(s.port());
    ASSERT_TRUE(c.send(std::string(line) + "\r\nHost: x\r\n\r\n"));
    auto rep = read_replies(c, 1);
    ASSERT_EQ(rep.size(), 1u);
    EXPECT_EQ(rep[0].status, 400) << rep[0].body;
    EXPECT_FALSE(rep[0].keep_alive);
  }
  client c(s.port());
  ASSERT_TRUE(c.send("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto rep = read_replies(c, 1);
  ASSERT_EQ(rep.size(), 1u);
  EXPECT_EQ(rep[0].status, 200);
  EXPECT_EQ(rep[0].body, "routed *");
}

TEST(http_router, socket_head_uses_get_pattern_route) {
  test_server s(socket_router());
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send("HEAD /users/123 HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = read_replies(c, 1, nullptr, /*head_request=*/true);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 200);
  EXPECT_EQ(r[0].header("content-length"), std::to_string(std::string("user 123").size()));
  EXPECT_EQ(r[0].body, "");
}

TEST(http_router, socket_pattern_404_and_405) {
  test_server s(socket_router());
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(
      c.send("DELETE /users/42 HTTP/1.1\r\nHost: x\r\n\r\n"  // pattern, other method
             "POST /static/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"  // catch-all
             "GET /forms/5 HTTP/1.1\r\nHost: x\r\n\r\n"                         // POST-only pattern
             "GET /users/ HTTP/1.1\r\nHost: x\r\n\r\n"     // :id needs a segment
             "GET /users/42/ HTTP/1.1\r\nHost: x\r\n\r\n"  // trailing slash
             "GET /static HTTP/1.1\r\nHost: x\r\n\r\n"     // catch-all needs its '/'
             "GET /nothing/here HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /users/42 HTTP/1.1\r\nHost: x\r\n\r\n"));  // still served afterwards
  auto r = read_replies(c, 8);
  ASSERT_EQ(r.size(), 8u);
  const char* allow[] = {"GET, HEAD", "GET, HEAD", "POST"};  // RFC 9110: 405 lists them
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(r[i].status, 405);
    EXPECT_EQ(r[i].header("allow"), allow[i]);
    EXPECT_EQ(r[i].body, "Method Not Allowed\n");
    EXPECT_TRUE(r[i].keep_alive);
  }
  for (int i = 3; i < 8; ++i) {
    EXPECT_EQ(r[i].header("allow"), "") << i;  // only 405 answers carry it
  }
  for (int i = 3; i < 7; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(r[i].status, 404);
    EXPECT_EQ(r[i].body, "Not Found\n");
    EXPECT_TRUE(r[i].keep_alive);
  }
  EXPECT_EQ(r[7].status, 200);
  EXPECT_EQ(r[7].body, "user 42");
}

// RFC 9110 §9.1: a server SHOULD answer 501 to a method it does not recognise; §15.5.6: 405
// is for a known method the resource does not allow, and carries Allow. Unknown methods (any
// token the parser maps to method::other, short or long) were answered 405 or 404 by the
// route table, as if "FOO" were a method the resource could have allowed.
TEST(http_router, socket_unknown_method_is_501_known_but_unrouted_is_405) {
  test_server s(socket_router());
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  const std::string long_method(200, 'X');
  ASSERT_TRUE(
      c.send("FOO /users/42 HTTP/1.1\r\nHost: x\r\n\r\n"         // routed for GET
             "FOO /nothing HTTP/1.1\r\nHost: x\r\n\r\n"          // routed for nothing
             "PROPFIND /static/a HTTP/1.1\r\nHost: x\r\n\r\n" +  // catch-all
             long_method +
             " /users/42 HTTP/1.1\r\nHost: x\r\n\r\n" +
             "PUT /users/42 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
             "GET /users/42 HTTP/1.1\r\nHost: x\r\n\r\n"));  // still served
  auto r = read_replies(c, 6);
  ASSERT_EQ(r.size(), 6u);
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(r[i].status, 501);
    EXPECT_EQ(r[i].body, "Not Implemented\n");
    EXPECT_EQ(r[i].header("allow"), "");
    EXPECT_TRUE(r[i].keep_alive);
  }
  EXPECT_EQ(r[4].status, 405);
  EXPECT_EQ(r[4].header("allow"), "GET, HEAD");
  EXPECT_EQ(r[5].status, 200);
  EXPECT_EQ(r[5].body, "user 42");
}

TEST(http_router, allowed_lists_the_methods_routed_for_a_path) {
  http::router r;
  auto h = [](const http::request&, http::response& res) { res.start(200).body(""); };
  r.get("/users/:id", h).add(http::method::del, "/users/:id", h);
  r.post("/users/new", h);  // exact, and /users/:id also matches "new"
  r.add(http::method::put, "/files/*rest", h).get("/files/readme", h);
  r.post("/submit", h);
  EXPECT_EQ(r.allowed("/users/42"), "GET, HEAD, DELETE");
  EXPECT_EQ(r.allowed("/users/new"), "GET, HEAD, POST, DELETE");
  EXPECT_EQ(r.allowed("/files/readme"), "GET, HEAD, PUT");
  EXPECT_EQ(r.allowed("/files/a/b"), "PUT");
  EXPECT_EQ(r.allowed("/submit"), "POST");  // no GET route, so no HEAD either
  EXPECT_EQ(r.allowed("/nothing"), "");
}

TEST(http_router, socket_head_on_post_only_route_is_405) {
  // HEAD falls back to GET; a path with neither but with a POST route is a 405, not a 404.
  test_server s(socket_router());
  ASSERT_GT(s.port(), 0);
  client c(s.port());
  ASSERT_TRUE(c.send("HEAD /forms/5 HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = read_replies(c, 1, nullptr, /*head_request=*/true);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 405);
  EXPECT_EQ(r[0].header("allow"), "POST");
  ASSERT_TRUE(c.send("HEAD /forms HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = read_replies(c, 1, nullptr, /*head_request=*/true);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 404);
}

}  // namespace
