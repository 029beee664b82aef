import pytest
import torch

from speechkeep.models.adaptor import AdaptorConfig, FrameStackAdaptor


def test_llama_omni_shape_and_token_rate():
    a = FrameStackAdaptor(384, 576)
    assert [type(m).__name__ for m in a.proj] == ["Linear", "ReLU", "Linear"]
    assert a.proj[0].in_features == 5 * 384 and a.proj[0].out_features == 2048 and a.proj[2].out_features == 576
    out = a([torch.randn(100, 384), torch.randn(53, 384)])  # 2 s and 1.06 s of Whisper frames
    assert [o.shape for o in out] == [torch.Size([20, 576]), torch.Size([10, 576])]


def test_stacking_concatenates_consecutive_frames():
    a = FrameStackAdaptor(2, 3, AdaptorConfig(stack_frames=3, hidden_size=4))
    frames = torch.arange(14, dtype=torch.float32).reshape(7, 2)
    assert torch.equal(a.stack(frames), torch.tensor([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]], dtype=torch.float32))
    pad = FrameStackAdaptor(2, 3, AdaptorConfig(stack_frames=3, hidden_size=4, remainder="pad"))
    assert torch.equal(pad.stack(frames)[2], torch.tensor([12, 13, 0, 0, 0, 0], dtype=torch.float32))


def test_batched_equals_one_by_one():
    torch.manual_seed(0)
    a = FrameStackAdaptor(8, 6, AdaptorConfig(stack_frames=2, hidden_size=16))
    xs = [torch.randn(n, 8) for n in (9, 4, 17)]
    for b, x in zip(a(xs), xs):
        torch.testing.assert_close(b, a([x])[0])


def test_invalid_config():
    with pytest.raises(ValueError, match="stack_frames"):
        AdaptorConfig(stack_frames=0)
