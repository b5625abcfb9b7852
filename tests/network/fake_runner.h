// A scripted NodeRunner for executor tests. Responses are looked up by node id and by how many
// times that node was called before (its ring round or tree attempt): text, delay, error, or a
// hang that ends only when the call's deadline passes or it is cancelled. Every NodeCall is
// recorded in start order, with the most calls in flight at once.
// Thread-safety: Start and the Pending methods may be called from any thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "network/node_engine.h"

namespace fgnet::network::testing {

struct Script {
  std::string text;
  int delay_ms = 0;
  std::string error;  // non-empty: the node fails with this message
  bool hang = false;  // returns only at the deadline or when cancelled
  std::int64_t tokens = 4;
};

inline Script Text(std::string text, int delay_ms = 0) {
  Script s;
  s.text = std::move(text);
  s.delay_ms = delay_ms;
  return s;
}
inline Script Fail(std::string error) {
  Script s;
  s.error = std::move(error);
  return s;
}
inline Script Hang() {
  Script s;
  s.hang = true;
  return s;
}

class FakeRunner : public NodeRunner {
 public:
  // The response of the `occurrence`-th call of `node_id` (-1: every call without its own).
  void Set(const std::string& node_id, Script script, int occurrence = -1) {
    std::lock_guard<std::mutex> lock(mu_);
    scripts_[{node_id, occurrence}] = std::move(script);
  }

  // The response of every call without a script of its own (default: "<node id> output").
  void SetDefault(Script script) {
    std::lock_guard<std::mutex> lock(mu_);
    default_ = std::move(script);
  }

  std::vector<NodeCall> calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  std::vector<std::string> call_ids() const {
    std::vector<std::string> ids;
    for (const NodeCall& c : calls()) ids.push_back(c.node_id);
    return ids;
  }
  // The `occurrence`-th call of `node_id` (nullopt when there is none).
  std::optional<NodeCall> Find(const std::string& node_id, int occurrence = 0) const {
    std::lock_guard<std::mutex> lock(mu_);
    int seen = 0;
    for (const NodeCall& c : calls_) {
      if (c.node_id == node_id && seen++ == occurrence) return c;
    }
    return std::nullopt;
  }
  int max_in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_in_flight_;
  }

  std::unique_ptr<Pending> Start(NodeCall call) override {
    Script script;
    {
      std::lock_guard<std::mutex> lock(mu_);
      int occurrence = counts_[call.node_id]++;
      auto it = scripts_.find({call.node_id, occurrence});
      if (it == scripts_.end()) it = scripts_.find({call.node_id, -1});
      script = it != scripts_.end() ? it->second
               : default_           ? *default_
                                    : Text(call.node_id + " output");
      calls_.push_back(call);
      max_in_flight_ = std::max(max_in_flight_, ++in_flight_);
    }
    return std::make_unique<FakePending>(this, std::move(script), call.deadline);
  }

 private:
  class FakePending : public Pending {
   public:
    FakePending(FakeRunner* runner, Script script,
                std::optional<std::chrono::steady_clock::time_point> deadline)
        : runner_(runner), script_(std::move(script)), deadline_(deadline) {
      thread_ = std::thread([this] { Run(); });
    }
    ~FakePending() override {
      Cancel();
      thread_.join();
    }
    NodeResult Wait() override {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return done_; });
      return result_;
    }
    void Cancel() override {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      cv_.notify_all();
    }
    bool done() const override {
      std::lock_guard<std::mutex> lock(mu_);
      return done_;
    }
    std::int64_t generated_tokens() const override { return script_.tokens / 2; }

   private:
    void Run() {
      using Clock = std::chrono::steady_clock;
      NodeResult r;
      const auto start = Clock::now();
      auto until = script_.hang ? Clock::time_point::max()
                                : start + std::chrono::milliseconds(script_.delay_ms);
      if (deadline_ && *deadline_ < until) until = *deadline_;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (until == Clock::time_point::max()) {
          cv_.wait(lock, [&] { return cancelled_; });
        } else {
          cv_.wait_until(lock, until, [&] { return cancelled_; });
        }
        const bool timed_out =
            deadline_ && Clock::now() >= *deadline_ &&
            (script_.hang || Clock::now() < start + std::chrono::milliseconds(script_.delay_ms));
        if (cancelled_) {
          r.finish_reason = "cancelled";
        } else if (timed_out) {
          r.finish_reason = "deadline";
        } else if (!script_.error.empty()) {
          r.status = MakeError(script_.error);
          r.finish_reason = "error";
        } else {
          r.text = script_.text;
          r.finish_reason = "stop";
          r.prompt_tokens = 10;
          r.completion_tokens = script_.tokens;
          r.cached_tokens = 3;
        }
        r.latency_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      }
      {
        std::lock_guard<std::mutex> runner_lock(runner_->mu_);
        --runner_->in_flight_;
      }
      std::lock_guard<std::mutex> lock(mu_);
      result_ = r;
      done_ = true;
      cv_.notify_all();
    }

    FakeRunner* runner_;
    Script script_;
    std::optional<std::chrono::steady_clock::time_point> deadline_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool cancelled_ = false;
    bool done_ = false;
    NodeResult result_;
    std::thread thread_;
  };

  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, Script> scripts_;
  std::map<std::string, int> counts_;
  std::optional<Script> default_;
  std::vector<NodeCall> calls_;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
};

}  // namespace fgnet::network::testing
