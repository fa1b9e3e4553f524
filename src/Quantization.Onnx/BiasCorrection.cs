using System.Numerics.Tensors;

using System.Runtime.InteropServices;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Empirical bias correction (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction",
/// 2019, with the input means measured on calibration data instead of taken from BatchNormalization): rounding the
/// weights moves each output channel's mean by ΔW·E[x], and the bias takes that shift back, so that Ŵ·E[x] + b' =
/// W·E[x] + b. It is exact for the mean and costs nothing at inference. Conv borders, where padding feeds zeros
/// instead of the mean, are not modelled.
/// </summary>
internal sealed class BiasCorrection : IActivationRecorder
{
    private readonly Dictionary<string, List<ChannelSums>> _inputs = new(StringComparer.Ordinal);

    /// <summary>Gets the names of the tensors whose per-channel means are collected.</summary>
    public IEnumerable<string> TensorNames => _inputs.Keys;

    /// <summary>Whether the correction models a node: Conv, MatMul with a 2-D weight, Gemm without transA and with alpha = beta = 1.</summary>
    public static bool Supports(NodeProto node, int weightRank) => node.OpType switch
    {
        "Conv" => weightRank >= 3,
        "MatMul" => weightRank == 2,
        "Gemm" => node.FindAttribute("transA")?.I is null or 0 && node.FindAttribute("alpha")?.F is null or 1 && node.FindAttribute("beta")?.F is null or 1,
        _ => false,
    };

    /// <summary>Collects the means of a supported node's input along its feature axis: 1 for Conv (NCHW), the last for MatMul and Gemm.</summary>
    public void Track(NodeProto node)
    {
        int axis = node.OpType == "Conv" ? 1 : -1;
        List<ChannelSums> sums = _inputs.TryGetValue(node.Input[0], out List<ChannelSums>? existing) ? existing : _inputs[node.Input[0]] = [];
        if (!sums.Any(s => s.Axis == axis))
        {
            sums.Add(new ChannelSums(axis));
        }
    }

    /// <inheritdoc/>
    public void Record(string name, ReadOnlySpan<float> values, ReadOnlySpan<int> shape)
    {
        if (_inputs.TryGetValue(name, out List<ChannelSums>? sums))
        {
            foreach (ChannelSums axis in sums)
            {
                axis.Add(values, shape, name);
            }
        }
    }

    /// <summary>
    /// The shift ΔW·E[x] per output channel of a node whose weight was quantized, or <see langword="null"/> when the
    /// node is not supported or its input was not seen.
    /// </summary>
    public float[]? Shift(NodeProto node, ReadOnlySpan<float> weight, ReadOnlySpan<float> restored, ReadOnlySpan<int> shape)
    {
        if (!Supports(node, shape.Length) || !_inputs.TryGetValue(node.Input[0], out List<ChannelSums>? sums)
            || sums.FirstOrDefault(s => s.Axis == (node.OpType == "Conv" ? 1 : -1))?.Means is not double[] means)
        {
            return null;
        }

        if (node.OpType != "Conv")
        {
            bool transposed = node.GemmTransB();
            return Linear(weight, restored, shape[transposed ? 1 : 0], shape[transposed ? 0 : 1], transposed, means);
        }

        int outputs = shape[0], perGroup = shape[1], kernel = weight.Length / (outputs * perGroup);
        long groups = node.FindAttribute("group")?.I ?? 1;
        if (groups <= 0 || means.Length != perGroup * groups || outputs % groups != 0)
        {
            return null;
        }

        float[] shift = new float[outputs];
        for (int o = 0; o < outputs; o++)
        {
            int firstInput = (int)(o / (outputs / groups)) * perGroup;
            double sum = 0;
            for (int c = 0; c < perGroup; c++)
            {
                int start = ((o * perGroup) + c) * kernel;
                for (int k = start; k < start + kernel; k++)
                {
                    sum += (weight[k] - (double)restored[k]) * means[firstInput + c];
                }
            }

            shift[o] = (float)sum;
        }

        return shift;
    }

    /// <summary>
    /// Adds a shift to a node's float bias: a Conv's or Gemm's constant bias of one value per channel, or the constant
    /// of the bias Add that alone reads a MatMul's output. Where there is no bias, one is added; where the bias is not
    /// such a constant, an Add of the shift follows the node. Shared constants are copied, never changed.
    /// </summary>
    public static void Apply(OnnxGraphEditor editor, NodeProto node, float[] shift, int weightRank)
    {
        if (node.OpType is "Conv" or "Gemm")
        {
            bool empty = node.Input.Count < 3 || node.Input[2].Length == 0;
            if (empty)
            {
                string bias = editor.AddInitializer(node.Output[0] + "_bias_correction", TensorProto.Types.DataType.Float, [shift.Length], MemoryMarshal.AsBytes<float>(shift));
                if (node.Input.Count < 3)
                {
                    node.Input.Add(bias);
                }
                else
                {
                    node.Input[2] = bias;
                }

                return;
            }

            if (TryAddToConstant(editor, node, 2, shift))
            {
                return;
            }
        }
        else
        {
            string output = node.Output[0];
            NodeProto[] consumers = [.. editor.Graph.AllNodes().Where(n => n.Input.Contains(output))];
            if (consumers is [NodeProto add] && add.OpType == "Add" && add.IsDefaultDomain() && add.Input.Count == 2 && editor.Graph.Node.Contains(add)
                && !editor.Graph.Output.Any(o => o.Name == output) && TryAddToConstant(editor, add, add.Input[0] == output ? 1 : 0, shift))
            {
                return;
            }
        }

        // Conv outputs are [N, C, spatial...]: the shift broadcasts from [C, 1, ...]; the others' from [N].
        long[] dims = node.OpType == "Conv" ? [shift.Length, .. Enumerable.Repeat(1L, weightRank - 2)] : [shift.Length];
        string corrected = node.Output[0];
        string uncorrected = editor.UniqueName(corrected + "_uncorrected");
        node.Output[0] = uncorrected;
        string correction = editor.AddInitializer(corrected + "_bias_correction", TensorProto.Types.DataType.Float, dims, MemoryMarshal.AsBytes<float>(shift));
        editor.InsertAfter(node, new NodeProto { Name = editor.UniqueName(node.Name + "_bias_correction"), OpType = "Add", Input = { uncorrected, correction }, Output = { corrected } });
    }

    /// <summary>Replaces a node's constant input of shape [N] or [1, ..., N] by a copy with the shift added.</summary>
    private static bool TryAddToConstant(OnnxGraphEditor editor, NodeProto node, int input, float[] shift)
    {
        if (editor.ConstantShape(node.Input[input]) is not { Count: > 0 } dims || dims[^1] != shift.Length || dims.Aggregate(1L, (a, b) => a * b) != shift.Length)
        {
            return false;
        }

        float[] bias = editor.ReadConstant(node.Input[input]);
        TensorPrimitives.Add(bias, shift, bias);
        editor.Rewire(node, input, editor.AddInitializer(node.Input[input] + "_corrected", TensorProto.Types.DataType.Float, dims, MemoryMarshal.AsBytes<float>(bias)));
        return true;
    }

    /// <summary>ΔW·μ for a [K, N] weight (or [N, K] when transposed).</summary>
    private static float[]? Linear(ReadOnlySpan<float> weight, ReadOnlySpan<float> restored, int inputs, int outputs, bool transposed, double[] means)
    {
        if (means.Length != inputs)
        {
            return null;
        }

        double[] shift = new double[outputs];
        for (int k = 0; k < inputs; k++)
        {
            for (int n = 0; n < outputs; n++)
            {
                int index = transposed ? (n * inputs) + k : (k * outputs) + n;
                shift[n] += (weight[index] - (double)restored[index]) * means[k];
            }
        }

        return [.. shift.Select(s => (float)s)];
    }

    /// <summary>Running sums per channel along one axis (negative from the end).</summary>
    private sealed class ChannelSums(int axis)
    {
        private double[]? _sums;
        private long _count;

        public int Axis => axis;

        public double[]? Means => _sums?.Select(s => s / _count).ToArray();

        public void Add(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, string name)
        {
            int a = axis < 0 ? shape.Length + axis : axis;
            if (a < 0 || a >= shape.Length)
            {
                throw new ArgumentException($"Tensor '{name}' of rank {shape.Length} has no axis {axis}.", nameof(shape));
            }

            int channels = shape[a], inner = 1;
            for (int i = a + 1; i < shape.Length; i++)
            {
                inner *= shape[i];
            }

            _sums ??= new double[channels];
            if (_sums.Length != channels)
            {
                throw new ArgumentException(FormattableString.Invariant($"Tensor '{name}' has {channels} channels on axis {a}, not {_sums.Length} as before."), nameof(shape));
            }

            int outer = channels * inner == 0 ? 0 : values.Length / (channels * inner);
            for (int o = 0; o < outer; o++)
            {
                for (int c = 0; c < channels; c++)
                {
                    _sums[c] += TensorPrimitives.Sum(values.Slice(((o * channels) + c) * inner, inner));
                }
            }

            _count += (long)outer * inner;
        }
    }
}
