// `fgnet logits`: the logits of every position of a token-id sequence, as a float32 .npy.
#include <vector>

#include "apps/fgnet/commands.h"
#include "apps/fgnet/model_loading.h"
#include "engine/model_session.h"
#include "util/npy.h"
#include "util/thread_pool.h"

namespace fgnet::cli {
namespace {

Status RunLogits(const ParsedArgs& args, CommandIo& io) {
  const std::vector<std::int64_t> ids64 = args.IntList("ids");
  if (ids64.empty()) return Error("--ids: no token ids given");
  FGNET_ASSIGN_OR_RETURN(const std::vector<AdapterArg> adapters, AdapterArgs(args));
  FGNET_ASSIGN_OR_RETURN(const Device device, DeviceOption(args));
  FGNET_ASSIGN_OR_RETURN(auto loaded,
                         LoadModel(args.String("model"), {.adapters = adapters, .device = device}));
  const std::int64_t vocab = loaded->checkpoint->config().vocab_size;
  std::vector<std::int32_t> ids;
  ids.reserve(ids64.size());
  for (std::size_t i = 0; i < ids64.size(); ++i) {
    if (ids64[i] >= vocab) {
      return MakeError("--ids: id ", ids64[i], " at index ", i, " is outside the vocabulary (",
                       vocab, " tokens)");
    }
    ids.push_back(static_cast<std::int32_t>(ids64[i]));
  }
  ThreadPool pool(ThreadsOption(args));
  ModelSession session(loaded->engine_model(), pool, static_cast<std::int64_t>(ids.size()),
                       loaded->adapter_set, KVTypeOption(args));
  std::vector<float> logits;
  FGNET_TRY(session.AppendAll(ids, &logits));
  WarnInactiveAdapters(session.inactive_adapters(), io.err);
  const std::string& out = args.String("out");
  FGNET_TRY(WriteNpyFloat32(out, {static_cast<std::int64_t>(ids.size()), vocab}, logits.data()));
  io.err << "wrote " << out << ": float32 [" << ids.size() << ", " << vocab << "]\n";
  return Ok();
}

}  // namespace

void AddLogitsCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "logits", "Run the forward pass over token ids and save the logits of every position.",
      RunLogits);
  c.Description(
      "No chat template and no BOS token are added: the ids are fed as given. The output is a "
      "float32 .npy array of shape [number of ids, vocab_size].");
  AddModelOption(c, "The model.").Required();
  AddAdapterOption(c);
  c.AddIntList("ids", "IDS",
               "Token ids, comma-separated (2,105,2364), or @FILE holding a JSON array or ids "
               "separated by commas or whitespace.")
      .IntRange(0)
      .AllowFile()
      .Required();
  c.AddString("out", "FILE.npy", "Output file for the logits.").Required();
  AddThreadsOption(c);
  AddDeviceOption(c);
  AddKVTypeOption(c);
  c.Example("--model gemma-3-270m --ids 2,105,2364 --out logits.npy");
  c.Example("--model gemma-3-270m --ids @ids.json --out logits.npy --threads 4");
}

}  // namespace fgnet::cli
