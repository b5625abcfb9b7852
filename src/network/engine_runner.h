// Running network nodes on the serving engine (NodeRunner on an Engine).
//
// A node's prompt is rendered with the model's chat format as raw text, in pieces that follow
// the shared prompt parts (node_engine.h, PromptParts):
//   FunctionGemma: "<bos><start_of_turn>developer\n" SYSTEM | "\n\n" DOMAIN | "\n\n" ROLE [tool
//                  declarations] | "<end_of_turn>\n<start_of_turn>user\n" USER
//                  "<end_of_turn>\n<start_of_turn>model\n"
//   Gemma 3:       "<bos><start_of_turn>user\n" SYSTEM | "\n\n" DOMAIN | "\n\n" ROLE |
//                  "\n\n" USER "<end_of_turn>\n<start_of_turn>model\n"
// Each part is stripped of surrounding whitespace and an empty part is left out with its
// separator. The whole text is exactly what RenderFunctionGemmaPrompt / RenderGemma3Prompt give
// for a leading developer (system) message SYSTEM\n\nDOMAIN\n\nROLE and the user message (checked
// on every render); tool declarations are written only for function-call contracts, which need
// the FunctionGemma format.
//
// Pinned prefixes: with EngineNodeRunnerOptions::pin_prefixes, the leading pieces become nested
// pinned prefixes (Engine::CreatePrefix with parents: system -> domain -> role), one per
// (adapter set, piece texts), kept and reused by later nodes; the request continues the deepest
// one. Each piece is tokenized on its own, so the prompt ids equal the concatenated ids of the
// pieces; they differ from tokenizing the whole text at once only where a token could span a
// piece boundary (the pieces start with "\n\n" or a turn marker, so in practice they agree). A
// logit ensemble decodes under several adapter sets at once, so its prompt is never pinned.
// Pinned prefixes hold their KV blocks until ReleasePrefixes() or the runner's end (and the end of
// every node running on them).
//
// Deadlines: a node whose deadline passed before its request was submitted ends with
// finish_reason "deadline" without running; after that the engine ends it. Creating a prefix is
// not interrupted by a deadline.
//
// Stops: <end_of_turn> and <eos> (where the tokenizer has them) end every node, in addition to
// the engine's EngineOptions::stop_ids.
//
// Threads: Start() returns at once; each node runs on a worker thread of its own, which creates
// the prefixes it needs (blocking), submits the request and counts its streamed tokens. Every
// problem (an unknown adapter, a bad contract, a failed prefix, an engine error) becomes the
// result's status with finish_reason "error"; nothing is thrown.
// Thread-safety: every method may be called from any thread. The engine, tokenizer and registry
// must outlive the runner, and the runner every Pending it returned; destroying a Pending cancels
// its node and waits for its worker.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/adapter_registry.h"
#include "engine/engine.h"
#include "model/checkpoint.h"
#include "network/node_engine.h"
#include "network/spec.h"
#include "tokenizer/tokenizer.h"
#include "util/status.h"

namespace fgnet::network {

enum class ChatFormat : std::uint8_t {
  kAuto,           // FunctionGemma when the tokenizer has <start_function_declaration>
  kFunctionGemma,  // a developer turn
  kGemma3,         // the system text opens the user turn
};

// The format `format` stands for with `tokenizer` (kAuto resolved).
ChatFormat ResolveChatFormat(ChatFormat format, const Tokenizer& tokenizer);

// A node's prompt text in the pieces it may be pinned in (see the file comment). Full() is the
// whole prompt.
struct RenderedNodePrompt {
  std::string system;  // begins with <bos>
  std::string domain;  // empty: no domain text
  std::string role;    // with the tool declarations of a function-call contract; may be empty
  std::string rest;    // the user turn and the generation prompt
  std::string Full() const { return system + domain + role + rest; }
};

// Renders `parts` in `format` (kFunctionGemma or kGemma3). A kFunctionCalls contract adds its
// tools' declarations (FunctionGemma only: an error in Gemma 3's format). Errors: invalid tools,
// kAuto.
Result<RenderedNodePrompt> RenderNodePrompt(const PromptParts& parts,
                                            const OutputContract& contract, ChatFormat format);

struct EngineNodeRunnerOptions {
  bool pin_prefixes = true;
  ChatFormat chat_format = ChatFormat::kAuto;
};

class EngineNodeRunner : public NodeRunner {
 public:
  EngineNodeRunner(Engine& engine, const Tokenizer& tokenizer, const AdapterRegistry& registry,
                   EngineNodeRunnerOptions options = {});
  ~EngineNodeRunner() override;
  EngineNodeRunner(const EngineNodeRunner&) = delete;
  EngineNodeRunner& operator=(const EngineNodeRunner&) = delete;

  std::unique_ptr<Pending> Start(NodeCall call) override;

  // The prefixes pinned so far (each piece of each adapter set counts once).
  std::size_t pinned_prefixes() const;
  // Unpins every prefix (nodes running on one keep it until they finish); later nodes pin anew.
  void ReleasePrefixes();

  ChatFormat chat_format() const { return format_; }

  // Shared with the workers.
  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
  ChatFormat format_;
};

// Loads every adapter of every expert of `experts` (PEFT directories, GGUF or RDRR files, as
// model_files.h LoadAdapter reads them, checked against `base`) into `registry` under its path
// (ExpertAdapter::path), so that NodeAdapter names resolve. An adapter already registered under
// that path is not loaded again. Errors name the experts file, the expert and the adapter.
Status LoadExpertAdapters(const ExpertSet& experts, const Checkpoint& base,
                          AdapterRegistry& registry);

}  // namespace fgnet::network
