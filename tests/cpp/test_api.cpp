// C++ API tests: helpers, operators through the dispatcher (CPU and autograd), the YarnEmbedding
// module against a plain float64 computation, and errors. Run by ctest.
#include <torch/torch.h>
#include <yarn_ext/yarn_ext.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
  }
}

// Whether fn throws an exception of type E whose message contains `needle`.
template <typename E>
bool throws(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
  } catch (const E& e) {
    return std::string(e.what()).find(needle) != std::string::npos;
  } catch (...) {
    return false;
  }
  return false;
}

// The rotation in float64, written out: pairs (i, i + half), angle = position * inv_freq[i].
at::Tensor plain_rotation(const at::Tensor& x, const at::Tensor& inv_freq, double mscale,
                          const at::Tensor& positions, bool inverse = false) {
  const int64_t half = inv_freq.size(0);
  const at::Tensor x64 = x.to(at::kDouble).contiguous().reshape({-1, x.size(-1)});
  const at::Tensor pos = positions.expand(x.sizes().slice(0, x.dim() - 1)).reshape({-1});
  at::Tensor out = x64.clone();
  auto in = x64.accessor<double, 2>();
  auto o = out.accessor<double, 2>();
  const double* freq = inv_freq.data_ptr<double>();
  for (int64_t r = 0; r < x64.size(0); ++r) {
    const double p = static_cast<double>(pos[r].item<int64_t>());
    for (int64_t i = 0; i < half; ++i) {
      const double c = std::cos(p * freq[i]) * mscale;
      const double s = (inverse ? -1.0 : 1.0) * std::sin(p * freq[i]) * mscale;
      o[r][i] = in[r][i] * c - in[r][i + half] * s;
      o[r][i + half] = in[r][i + half] * c + in[r][i] * s;
    }
  }
  return out.reshape(x.sizes());
}

double max_error(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

void test_helpers() {
  check(std::abs(yarn_ext::find_correction_dim(8, 256) - 51.5219231025195) < 1e-12,
        "find_correction_dim");
  const auto range = yarn_ext::find_correction_range(32, 1, 128, 10000, 2048);
  check(range.first == 16 && range.second == 41, "find_correction_range (16, 41)");
  const auto fractional = yarn_ext::find_correction_range_fractional(32, 1, 64, 150000, 4096);
  check(std::abs(fractional.first - 8.09) < 0.01 && std::abs(fractional.second - 17.39) < 0.01,
        "find_correction_range_fractional");
  const at::Tensor ramp = yarn_ext::linear_ramp_mask(0.2, 0.8, 128);
  check(ramp.scalar_type() == at::kFloat && ramp.size(0) == 128, "linear_ramp_mask shape");
  check(ramp[0].item<float>() == 0.0f && ramp[127].item<float>() == 1.0f, "linear_ramp_mask ends");
  check(std::abs(yarn_ext::get_mscale(2.0) - (0.1 * std::log(2.0) + 1.0)) < 1e-15, "get_mscale");
  check(yarn_ext::get_mscale() == 1.0, "get_mscale default");
}

void test_module_matches_plain_math() {
  // Qwen3-style static YaRN: factor 4 over a 32K original context.
  yarn_ext::YarnEmbedding rope(yarn_ext::YarnEmbeddingOptions(128)
                                   .max_position_embeddings(1024)
                                   .base(1e6)
                                   .original_max_position_embeddings(256)
                                   .finetuned(true));
  check(rope->scale() == 4.0, "static scale = max / original");
  check(std::abs(rope->mscale() - (0.1 * std::log(4.0) + 1.0)) < 1e-15, "mscale");
  torch::manual_seed(0);
  at::Tensor q = torch::randn({40, 8, 128});
  at::Tensor k = torch::randn({40, 2, 128});
  at::Tensor positions = torch::randint(-100, 5000, {40, 1}, torch::kLong);
  const at::Tensor want_q = plain_rotation(q, rope->inv_freq(), rope->mscale(), positions);
  const at::Tensor want_k = plain_rotation(k, rope->inv_freq(), rope->mscale(), positions);
  const at::Tensor out = rope->forward(q, std::nullopt, positions);
  check(max_error(out, want_q) < 1e-5, "forward against plain float64");
  rope->rotate_(q, k, positions);
  check(max_error(q, want_q) < 1e-5 && max_error(k, want_k) < 1e-5, "rotate_ q and k");
  check(torch::equal(out, q), "forward and rotate_ agree bit for bit");
  const auto [cos, sin] = rope->cos_sin(16);
  check(cos.sizes() == at::IntArrayRef({1, 1, 16, 128}) && sin.sizes() == cos.sizes(),
        "cos_sin shape");
}

// MRoPE with contiguous sections in float64, written out: x [T, H, D], positions [3, T, 1]; pair
// i turns with component 0 below sections[0], 1 below sections[0] + sections[1], else 2.
at::Tensor mrope_rotation(const at::Tensor& x, const at::Tensor& inv_freq, double mscale,
                          const at::Tensor& positions, const std::vector<int64_t>& sections) {
  const int64_t half = inv_freq.size(0);
  at::Tensor out = x.to(at::kDouble).clone();
  const at::Tensor in = out.clone();
  auto i3 = in.accessor<double, 3>();
  auto o3 = out.accessor<double, 3>();
  auto p = positions.accessor<int64_t, 3>();
  const double* freq = inv_freq.data_ptr<double>();
  for (int64_t t = 0; t < x.size(0); ++t) {
    for (int64_t h = 0; h < x.size(1); ++h) {
      for (int64_t i = 0; i < half; ++i) {
        const int c = i < sections[0] ? 0 : (i < sections[0] + sections[1] ? 1 : 2);
        const double angle = static_cast<double>(p[c][t][0]) * freq[i];
        const double cs = std::cos(angle) * mscale, sn = std::sin(angle) * mscale;
        o3[t][h][i] = i3[t][h][i] * cs - i3[t][h][i + half] * sn;
        o3[t][h][i + half] = i3[t][h][i + half] * cs + i3[t][h][i] * sn;
      }
    }
  }
  return out;
}

void test_mrope() {
  const std::vector<int64_t> sections{16, 24, 24};  // Qwen2-VL
  yarn_ext::YarnEmbedding rope(
      yarn_ext::YarnEmbeddingOptions(128).max_position_embeddings(256).base(1e6).mrope_section(
          sections));
  torch::manual_seed(1);
  at::Tensor q = torch::randn({9, 4, 128});
  at::Tensor k = torch::randn({9, 2, 128});
  const at::Tensor positions = torch::randint(-10, 600, {3, 9, 1}, torch::kLong);
  const at::Tensor out = rope->forward(q, std::nullopt, positions);
  check(max_error(out, mrope_rotation(q, rope->inv_freq(), rope->mscale(), positions, sections)) <
            1e-5,
        "MRoPE forward against plain float64");
  const at::Tensor k0 = k.clone();
  rope->rotate_(q, k, positions);
  check(torch::equal(out, q), "MRoPE forward and rotate_ agree bit for bit");
  check(max_error(k, mrope_rotation(k0, rope->inv_freq(), rope->mscale(), positions, sections)) <
            1e-5,
        "MRoPE rotate_ of k against plain float64");
  // equal components: plain RoPE, bit for bit
  yarn_ext::YarnEmbedding plain(
      yarn_ext::YarnEmbeddingOptions(128).max_position_embeddings(256).base(1e6));
  const at::Tensor x = torch::randn({9, 4, 128});
  const at::Tensor t = positions[0];
  check(torch::equal(rope->forward(x, std::nullopt, t.expand({3, 9, 1})),
                     plain->forward(x, std::nullopt, t)) &&
            torch::equal(rope->forward(x, std::nullopt, t), plain->forward(x, std::nullopt, t)),
        "equal components are plain RoPE");
  // cos_sin at MRoPE positions: [T, dim], the rotation's own values
  const auto [cos, sin] = rope->cos_sin_at(positions.squeeze(-1));
  check(cos.sizes() == at::IntArrayRef({9, 128}) && sin.sizes() == cos.sizes(), "cos_sin_at shape");
  at::Tensor unit = torch::zeros({9, 1, 128});
  unit.narrow(-1, 0, 64).fill_(1);
  const at::Tensor rotated = rope->forward(unit, std::nullopt, positions).squeeze(1);
  check(torch::equal(cos.narrow(-1, 0, 64), rotated.narrow(-1, 0, 64)) &&
            torch::equal(sin.narrow(-1, 0, 64), rotated.narrow(-1, 64, 64)),
        "cos_sin_at = the rotation of (1, 0)");
  // backward: the inverse rotation with the same per-pair angles
  at::Tensor xg = torch::randn({9, 4, 128}, torch::kDouble).requires_grad_();
  const at::Tensor grad = torch::randn({9, 4, 128}, torch::kDouble);
  rope->forward(xg, std::nullopt, positions).backward(grad);
  const at::Tensor back = yarn_ext::rotate(grad, rope->cos_sin_cache(), rope->inv_freq(),
                                           rope->mscale(), positions, false, true, sections);
  check(torch::equal(xg.grad(), back), "MRoPE backward = inverse rotation");
  // errors
  check(throws<std::invalid_argument>([&] { plain->forward(x, std::nullopt, positions); },
                                      "no mrope_section"),
        "MRoPE positions on a plain module");
  check(throws<std::invalid_argument>(
            [] {
              yarn_ext::YarnEmbedding(
                  yarn_ext::YarnEmbeddingOptions(128).mrope_section(std::vector<int64_t>{1, 2, 3}));
            },
            "YarnEmbedding: mrope_section must be non-negative and sum to dim / 2 = 64"),
        "bad sections at construction");
  check(throws<std::invalid_argument>([&] { rope->cos_sin_at(t.squeeze(-1)); }, "components first"),
        "cos_sin_at wants [3, ...] on an MRoPE module");
}

void test_growth_and_precision() {
  yarn_ext::YarnEmbedding rope(yarn_ext::YarnEmbeddingOptions(64)
                                   .max_position_embeddings(16)
                                   .original_max_position_embeddings(16));
  check(rope->scale() == 1.0 && rope->mscale() == 1.0, "plain RoPE before growth");
  at::Tensor x = torch::randn({2, 40, 64});
  rope->forward(x);
  check(rope->max_seq_len_cached() == 40 && rope->scale() == 2.5, "dynamic growth to 40");
  rope->to(torch::kBFloat16);
  check(rope->inv_freq().scalar_type() == at::kDouble &&
            rope->cos_sin_cache().scalar_type() == at::kFloat,
        "tables keep float64 / float32 under to(bfloat16)");
}

void test_autograd_in_cpp() {
  yarn_ext::YarnEmbedding rope(yarn_ext::YarnEmbeddingOptions(32).max_position_embeddings(64));
  at::Tensor x = torch::randn({3, 10, 32}, torch::kDouble).requires_grad_();
  at::Tensor grad = torch::randn({3, 10, 32}, torch::kDouble);
  rope->forward(x).backward(grad);
  const at::Tensor positions = torch::arange(10);
  const at::Tensor want = plain_rotation(grad, rope->inv_freq(), rope->mscale(), positions, true);
  check(x.grad().defined() && max_error(x.grad(), want) < 1e-12, "C++ backward = inverse rotation");
  at::Tensor q = torch::randn({4, 2, 32}).requires_grad_();
  check(throws<c10::Error>(
            [&] { rope->rotate_(q * 1.0, std::nullopt, torch::arange(4).unsqueeze(1)); },
            "for inference"),
        "rotate_ refuses to be recorded");
}

void test_errors() {
  check(throws<std::invalid_argument>(
            [] { yarn_ext::YarnEmbedding(yarn_ext::YarnEmbeddingOptions(63)); }, "dim"),
        "odd dim named");
  check(throws<std::invalid_argument>(
            [] { yarn_ext::YarnEmbedding(yarn_ext::YarnEmbeddingOptions(64).scaling_factor(2.0)); },
            "scaling_factor"),
        "scaling_factor without finetuned named");
  yarn_ext::YarnEmbedding rope(yarn_ext::YarnEmbeddingOptions(64));
  at::Tensor q = torch::randn({5, 2, 64});
  const at::Tensor before = q.clone();
  check(throws<std::invalid_argument>([&] { rope->rotate_(q, std::nullopt, torch::arange(3)); },
                                      "positions"),
        "positions that do not broadcast named");
  check(torch::equal(q, before), "a failed in-place call changes nothing");
  check(throws<std::invalid_argument>([&] { rope->forward(torch::ones({2, 64}, torch::kLong)); },
                                      "x"),
        "integer x named");
}

void test_tables_never_built() {
  // A moved-from module holds no tables: every call refuses, and reset_parameters() builds the
  // tables as constructed (equal to a fresh module's) on the options' device.
  auto options = yarn_ext::YarnEmbeddingOptions(32).max_position_embeddings(16).finetuned(true);
  yarn_ext::YarnEmbedding rope(options);
  yarn_ext::YarnEmbedding fresh(options);
  rope->forward(torch::randn({1, 40, 32}));  // grows: reset_parameters() must undo this
  yarn_ext::YarnEmbeddingImpl taken = std::move(*rope);
  check(taken.max_seq_len_cached() == 40, "the moved-to module has the grown tables");
  const at::Tensor x = torch::randn({1, 8, 32});
  const std::string refused = "holds no tables";
  check(throws<std::runtime_error>([&] { rope->forward(x); }, refused), "forward refuses");
  at::Tensor q = x.clone();
  check(throws<std::runtime_error>([&] { rope->rotate_(q); }, refused), "rotate_ refuses");
  check(torch::equal(q, x), "a refused rotate_ changes nothing");
  check(throws<std::runtime_error>([&] { rope->cos_sin(4); }, refused), "cos_sin refuses");
  check(throws<std::runtime_error>([&] { rope->to(torch::kCPU); }, refused), "to refuses");
  rope->reset_parameters();
  check(torch::equal(rope->cos_sin_cache(), fresh->cos_sin_cache()) &&
            torch::equal(rope->inv_freq(), fresh->inv_freq()) && rope->mscale() == fresh->mscale(),
        "reset_parameters builds the tables as constructed");
  check(torch::equal(rope->forward(x), fresh->forward(x)), "the reset module rotates");
  taken.reset_parameters();
  check(taken.max_seq_len_cached() == 16, "reset_parameters drops the growth");
}

void test_in_place_aliasing() {
  // q viewing the module's own cache: refused, nothing written.
  yarn_ext::YarnEmbedding rope(yarn_ext::YarnEmbeddingOptions(32).max_position_embeddings(16));
  const at::Tensor cache = rope->cos_sin_cache();
  const at::Tensor before = cache.clone();
  check(throws<std::invalid_argument>(
            [&] {
              rope->rotate_(cache.narrow(0, 0, 4).unsqueeze(1), std::nullopt,
                            torch::arange(4).unsqueeze(1));
            },
            "q shares memory with cos_sin_cache"),
        "q viewing the cache is refused");
  check(torch::equal(cache, before), "the refused call changed nothing");
}

void test_threads() {
  // Eight threads share one module and grow it while they call it. Static YaRN at scale 4 over a
  // 16-position original, lengths up to 63: growth only extends the cache, so every result must
  // equal a single-threaded module's.
  auto options = yarn_ext::YarnEmbeddingOptions(32)
                     .max_position_embeddings(16)
                     .original_max_position_embeddings(16)
                     .finetuned(true)
                     .scaling_factor(4.0);
  yarn_ext::YarnEmbedding shared(options);
  yarn_ext::YarnEmbedding alone(options);
  constexpr int kThreads = 8;
  constexpr int kCalls = 6;
  std::vector<std::vector<at::Tensor>> inputs(kThreads), outputs(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int c = 0; c < kCalls; ++c) inputs[t].push_back(torch::randn({2, 16 + 8 * c + t, 32}));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCalls; ++c) {
        if (c % 2 == 0) {
          outputs[t].push_back(shared->forward(inputs[t][c]));
        } else {
          at::Tensor out = inputs[t][c].clone();
          shared->rotate_(out);
          outputs[t].push_back(out);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  bool same = true;
  for (int t = 0; t < kThreads; ++t) {
    for (int c = 0; c < kCalls; ++c)
      same = same && torch::equal(outputs[t][c], alone->forward(inputs[t][c]));
  }
  check(same, "threads sharing a module get a single-threaded module's results");
  check(shared->max_seq_len_cached() == 16 + 8 * (kCalls - 1) + kThreads - 1,
        "the shared module grew to the longest call");
  // A copy has tables and a lock of its own.
  auto copy = std::make_shared<yarn_ext::YarnEmbeddingImpl>(*shared);
  check(copy->max_seq_len_cached() == shared->max_seq_len_cached(), "a copy has the grown tables");
  copy->forward(torch::randn({1, 60, 32}));
  copy->forward(torch::randn({1, 200, 32}));
  check(copy->max_seq_len_cached() == 200 && shared->max_seq_len_cached() < 200,
        "a copy grows alone");
}

// rotate_store_kv through the module: q as rotate_ rotates it, k and v in the cache rows of
// their slots (padding writes nothing), a bad slot refused with nothing written.
void test_rotate_store_kv() {
  torch::NoGradGuard no_grad;
  yarn_ext::YarnEmbedding rope(yarn_ext::YarnEmbeddingOptions(64).max_position_embeddings(64));
  const int64_t tokens = 5;
  const at::Tensor q0 = torch::randn({tokens, 4, 128});
  const at::Tensor k0 = torch::randn({tokens, 2, 128});
  const at::Tensor v = torch::randn({tokens, 2, 128});
  const at::Tensor positions = torch::tensor({3, 100, 7, 0, 1}, torch::kLong);
  const at::Tensor slots = torch::tensor({6, -1, 0, 11, 3}, torch::kLong);
  at::Tensor k_cache = torch::full({3, 4, 2, 128}, NAN);
  at::Tensor v_cache = torch::full({3, 4, 2, 128}, NAN);
  at::Tensor q = q0.clone();
  at::Tensor k = k0.clone();
  rope->rotate_store_kv_(q, k, v, positions, k_cache, v_cache, slots);
  auto [q_want, k_want] = rope->rotate_(q0.clone(), k0.clone(), positions.unsqueeze(1));
  check(torch::equal(q, q_want), "rotate_store_kv_: q as rotate_ rotates it");
  check(torch::equal(k, k0), "rotate_store_kv_: k untouched without write_k");
  const at::Tensor k_rows = k_cache.view({12, 2, 128});
  const at::Tensor v_rows = v_cache.view({12, 2, 128});
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t slot = slots[t].item<int64_t>();
    if (slot < 0) continue;
    check(torch::equal(k_rows[slot], (*k_want)[t]), "rotate_store_kv_: k in its slot's row");
    check(torch::equal(v_rows[slot], v[t]), "rotate_store_kv_: v in its slot's row");
  }
  check(k_rows.isnan().all(-1).all(-1).sum().item<int64_t>() == 12 - 4,
        "rotate_store_kv_: only the tokens' rows written");
  const at::Tensor before = k_cache.clone();
  const at::Tensor bad = torch::tensor({6, -1, 0, 12, 3}, torch::kLong);
  check(throws<std::exception>(
            [&] { rope->rotate_store_kv_(q, k, v, positions, k_cache, v_cache, bad); },
            "slot_mapping[3] = 12 is outside"),
        "rotate_store_kv_: a slot past the cache is refused");
  check(torch::equal(k_cache.nan_to_num(7), before.nan_to_num(7)),
        "rotate_store_kv_: a refused call writes nothing");
  // the options reach the operator: write_k, and the invalid-slot counter (which the CPU leaves
  // as it is: it refuses such slots instead)
  yarn_ext::KvStoreOptions options;
  options.write_k = true;
  options.invalid_slots = torch::full({1}, 2, torch::kInt);
  at::Tensor k2 = k0.clone();
  rope->rotate_store_kv_(q0.clone(), k2, v, positions, k_cache, v_cache, slots, options);
  check(torch::equal(k2, *k_want), "rotate_store_kv_: write_k writes the rotated k back");
  check(options.invalid_slots->item<int32_t>() == 2, "rotate_store_kv_: the counter untouched");
  // in grad mode, a norm weight that requires grad (a model's parameter) is refused by name,
  // with nothing written: its gradient would be lost
  {
    torch::AutoGradMode grad(true);
    yarn_ext::KvStoreOptions with_weight;
    with_weight.k_norm_weight = torch::ones({128}).requires_grad_();
    const at::Tensor q_before = q.clone();
    check(throws<std::exception>(
              [&] {
                rope->rotate_store_kv_(q, k, v, positions, k_cache, v_cache, slots, with_weight);
              },
              "k_norm_weight requires grad"),
          "rotate_store_kv_: a weight requiring grad is refused");
    check(torch::equal(q, q_before), "rotate_store_kv_: the refused call leaves q");
  }
}

}  // namespace

int main() {
  test_helpers();
  test_module_matches_plain_math();
  test_growth_and_precision();
  test_autograd_in_cpp();
  test_mrope();
  test_errors();
  test_tables_never_built();
  test_in_place_aliasing();
  test_threads();
  test_rotate_store_kv();
  std::printf("yarn_ext %s C++ tests: %s\n", YARN_EXT_VERSION, failures == 0 ? "passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
