// A C++ server's view of a model that uses yarn_ext: it loads the AOTInductor package that
// export_model.py wrote and runs it. The package calls yarn_ext's operators by name through the
// dispatcher; linking yarn_ext::yarn_ext (and including one of its headers) registers them.
//
//   yarn_aoti OUT_DIR/model.pt2 OUT_DIR/check.pt
//
// check.pt holds inputs and the eager PyTorch model's output for them; the program prints the
// largest difference and fails above 1e-5 relative to the output's magnitude.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>
#include <yarn_ext/yarn_ext.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL.pt2 CHECK.pt\n", argv[0]);
    return 2;
  }
  std::ifstream file(argv[2], std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(file)),
                                std::istreambuf_iterator<char>());
  const c10::List<c10::IValue> saved = torch::pickle_load(bytes).toList();
  const at::Tensor x = saved.get(0).toTensor();
  const at::Tensor positions = saved.get(1).toTensor();
  const at::Tensor expected = saved.get(2).toTensor();

  torch::NoGradGuard no_grad;
  torch::inductor::AOTIModelPackageLoader loader(argv[1]);
  const std::vector<at::Tensor> outputs = loader.run({x, positions});

  const double error = (outputs.at(0) - expected).abs().max().item<double>();
  const double bound = 1e-5 * expected.abs().max().item<double>();
  std::printf(
      "yarn_ext %s, AOTInductor package %s: %lld tokens, max |C++ - Python| = %.3g (bound %.3g)\n",
      YARN_EXT_VERSION, argv[1], static_cast<long long>(x.size(0)), error, bound);
  return error <= bound ? 0 : 1;
}
