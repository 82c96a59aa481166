// Tensor ownership, which tch does not expose: whether a tensor handle is the only owner of
// its memory, so the loader may write a new batch into it. Only the light TensorBase header
// is included (at::Tensor derives from it with no members of its own).
#include <ATen/core/TensorBase.h>

#include <exception>

extern "C" {

// 1 when `tensor` (an at::Tensor*, as tch holds it) is defined, owns its storage and is the
// only reference to both its TensorImpl and that storage (no other handle, view or autograd
// record can see the memory); 0 otherwise, or when libtorch threw.
int facepipe_tensor_sole_owner(const void* tensor) {
  try {
    const auto* t = static_cast<const at::TensorBase*>(tensor);
    if (t == nullptr || !t->defined() || !t->has_storage()) {
      return 0;
    }
    return t->use_count() == 1 && t->storage().use_count() == 1 ? 1 : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

}  // extern "C"
