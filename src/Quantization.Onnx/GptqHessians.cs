using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// The GPTQ Hessians H = 2/n Σ x xᵀ of the inputs of MatMul and Gemm nodes, collected while calibration data runs
/// through the model. Conv inputs would need their patches unfolded (im2col) and are left to rounding to nearest.
/// </summary>
internal sealed class GptqHessians : IActivationRecorder
{
    private readonly Dictionary<string, HessianAccumulator> _inputs = new(StringComparer.Ordinal);

    /// <summary>Gets the names of the tensors whose Hessians are collected.</summary>
    public IEnumerable<string> TensorNames => _inputs.Keys;

    /// <summary>Whether GPTQ can quantize this node's weight: a MatMul with a 2-D weight, or a Gemm without transA.</summary>
    public static bool Supports(NodeProto node, int weightRank) =>
        weightRank == 2 && (node.OpType == "MatMul" || (node.OpType == "Gemm" && node.FindAttribute("transA")?.I is null or 0));

    /// <summary>Collects the Hessian of a node's input, whose last axis has <paramref name="features"/> values.</summary>
    public void Track(NodeProto node, int features)
    {
        if (!_inputs.ContainsKey(node.Input[0]))
        {
            _inputs.Add(node.Input[0], new HessianAccumulator(features));
        }
    }

    /// <inheritdoc/>
    public void Record(string name, ReadOnlySpan<float> values, ReadOnlySpan<int> shape)
    {
        if (_inputs.TryGetValue(name, out HessianAccumulator? hessian))
        {
            hessian.Add(values, shape, name);
        }
    }

    /// <summary>Gets the Hessian of a node's input, if it was collected and saw data.</summary>
    public HessianAccumulator? For(NodeProto node) =>
        _inputs.TryGetValue(node.Input[0], out HessianAccumulator? hessian) && hessian.Rows > 0 ? hessian : null;
}
