// `fgnet route`: ranks the experts of an experts file for a prompt with the embedding router.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "apps/fgnet/commands.h"
#include "apps/fgnet/model_loading.h"
#include "model/model_files.h"
#include "network/spec.h"
#include "router/embedding_router.h"
#include "router/text_embedder.h"
#include "util/json.h"
#include "util/thread_pool.h"

namespace fgnet::cli {
namespace {

std::string Fixed(double value, int digits) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", digits, value);
  return buffer;
}

void PrintTable(const std::vector<router::RankedExpert>& ranked, std::size_t selected,
                std::ostream& out) {
  std::size_t width = 6;  // "expert"
  for (const auto& r : ranked) width = std::max(width, r.id.size());
  const auto pad = [](std::string s, std::size_t w, bool right) {
    if (s.size() >= w) return s;
    return right ? std::string(w - s.size(), ' ') + s : s + std::string(w - s.size(), ' ');
  };
  out << pad("rank", 4, true) << "  " << pad("expert", width, false) << "  "
      << pad("probability", 11, true) << "  " << pad("similarity", 10, true) << "  selected\n";
  for (std::size_t i = 0; i < ranked.size(); ++i) {
    const auto& r = ranked[i];
    out << pad(std::to_string(i + 1), 4, true) << "  " << pad(r.id, width, false) << "  "
        << pad(Fixed(r.probability, 4), 11, true) << "  " << pad(Fixed(r.similarity, 4), 10, true)
        << (i < selected ? "  *" : "") << "\n";
  }
}

Status RunRoute(const ParsedArgs& args, CommandIo& io) {
  FGNET_ASSIGN_OR_RETURN(const network::ExpertSet experts,
                         network::LoadExperts(args.String("experts")));
  if (experts.experts.empty())
    return MakeError(args.String("experts"), ": $.experts: no experts to route to");
  FGNET_ASSIGN_OR_RETURN(auto loaded, LoadModel(args.String("model"), {.tokenizer = true}));
  std::optional<RoutingAdapter> adapter;
  router::EmbedderOptions options;
  options.index = args.Int("layer");
  FGNET_ASSIGN_OR_RETURN(options.pooling, router::ParsePooling(args.String("pooling")));
  options.max_tokens = args.Int("max-tokens");
  if (auto text = args.OptString("router-adapter")) {
    FGNET_ASSIGN_OR_RETURN(adapter, LoadRoutingAdapter(*text, *loaded->checkpoint));
    options.adapter = &adapter->adapter;
    options.adapter_scale = adapter->scale;
  }
  ThreadPool pool(ThreadsOption(args));
  FGNET_ASSIGN_OR_RETURN(const router::TextEmbedder embedder,
                         router::TextEmbedder::Create(*loaded->model, *loaded->tokenizer, pool,
                                                      loaded->checkpoint->content_hash(), options));
  router::EmbeddingRouter router(embedder);
  const std::optional<std::string> cache = args.OptString("cache");
  if (cache) {
    FGNET_ASSIGN_OR_RETURN(const router::CacheLoadReport report, router.LoadCache(*cache));
    for (const std::string& line : report.rejected) io.err << "warning: " << line << "\n";
  }
  for (const network::Expert& e : experts.experts) {
    FGNET_TRY(router.AddExpert(e.id, e.description, e.exemplars));
  }
  if (cache) FGNET_TRY(router.SaveCache(*cache));
  const double temperature = args.Float("temperature");
  FGNET_ASSIGN_OR_RETURN(const std::vector<router::RankedExpert> ranked,
                         router.Rank(args.String("prompt"), {}, temperature));
  FGNET_ASSIGN_OR_RETURN(const std::vector<router::RankedExpert> selected,
                         router::Select(ranked, args.Int("top-k"), args.Float("threshold")));
  if (args.Switch("json")) {
    Json json = Json::object();
    json["layer"] = embedder.resolved_index();
    json["pooling"] = router::PoolingName(options.pooling);
    json["temperature"] = temperature;
    json["top_k"] = args.Int("top-k");
    json["threshold"] = args.Float("threshold");
    json["experts"] = Json::array();
    for (std::size_t i = 0; i < ranked.size(); ++i) {
      json["experts"].push_back({{"rank", i + 1},
                                 {"id", ranked[i].id},
                                 {"probability", ranked[i].probability},
                                 {"similarity", ranked[i].similarity},
                                 {"selected", i < selected.size()}});
    }
    json["selected"] = Json::array();
    for (const auto& s : selected) json["selected"].push_back(s.id);
    json["cache"] = {{"hits", router.cache_stats().hits}, {"misses", router.cache_stats().misses}};
    io.out << json.dump() << "\n";
  } else {
    PrintTable(ranked, selected.size(), io.out);
  }
  return Ok();
}

}  // namespace

void AddRouteCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "route", "Rank the experts of an experts file for a prompt with the embedding router.",
      RunRoute);
  c.Description(
      "Each text (the prompt, and every expert's description and exemplars) is encoded with "
      "<bos> first, run through the base model (optionally with a routing adapter) up to a "
      "hidden-state layer, pooled and L2-normalised; an expert's embedding is the normalised "
      "mean of its description's and exemplars' embeddings. Experts are ranked by cosine "
      "similarity with the prompt; probabilities are the softmax of similarity / temperature. "
      "The selected experts (marked *) are the first --top-k whose probability reaches "
      "--threshold, and always the best one. With --cache, expert text embeddings are kept in a "
      "JSON file keyed by the model, adapter, options and text.");
  AddModelOption(c, "The base model (with tokenizer.json beside it).").Required();
  c.AddString("experts", "FILE.json", "The experts file (ids, descriptions, exemplars).")
      .Required();
  c.AddString("prompt", "TEXT", "The task to route.").AllowFile().Required();
  c.AddInt("layer", "N",
           "Hidden-state index: 0 the scaled embeddings, i the output of layer i-1, "
           "num_hidden_layers (or -1) the final-normed output; negative counts from the end.")
      .Default("-1");
  c.AddString("pooling", "MODE", "How token states become one vector.")
      .Choices({"mean", "last"})
      .Default("mean");
  c.AddInt("max-tokens", "N", "Tokens per text, <bos> included; longer texts are truncated.")
      .IntRange(2)
      .Default("256");
  c.AddString("router-adapter", "PATH[:SCALE]",
              "A LoRA adapter applied while embedding (PEFT directory, RDRR package or GGUF "
              "LoRA file); SCALE multiplies its scaling.");
  c.AddFloat("temperature", "T", "Softmax temperature (> 0).").Default("1");
  c.AddInt("top-k", "K", "Experts selected at most.").IntRange(1).Default("1");
  c.AddFloat("threshold", "P", "Probability an expert after the best needs to be selected.")
      .FloatRange(0.0, 1.0)
      .Default("0");
  c.AddString("cache", "FILE.json", "Embedding cache file, read if present and rewritten.");
  c.AddSwitch("json", "Print the ranking as one JSON object.");
  AddThreadsOption(c);
  c.Example(
      "--model functiongemma-270m --experts examples/networks/experts.json --prompt 'Center the "
      "login form'");
  c.Example(
      "--model functiongemma-270m --experts experts.json --prompt @task.txt --layer 9 "
      "--pooling last --top-k 2 --threshold 0.2 --temperature 0.05 --cache route-cache.json "
      "--json");
}

}  // namespace fgnet::cli
