using System.Numerics.Tensors;

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
    private readonly Dictionary<string, ChannelSums> _inputs = new(StringComparer.Ordinal);

    /// <summary>Gets the names of the tensors whose per-channel means are collected.</summary>
    public IEnumerable<string> TensorNames => _inputs.Keys;

    /// <summary>Collects the means of a layer's input along its feature axis: 1 for Conv (NCHW), the last for MatMul and Gemm.</summary>
    public void Track(NodeProto node)
    {
        if (!_inputs.ContainsKey(node.Input[0]))
        {
            _inputs.Add(node.Input[0], new ChannelSums(node.OpType == "Conv" ? 1 : -1));
        }
    }

    /// <inheritdoc/>
    public void Record(string name, ReadOnlySpan<float> values, ReadOnlySpan<int> shape)
    {
        if (_inputs.TryGetValue(name, out ChannelSums? sums))
        {
            sums.Add(values, shape, name);
        }
    }

    /// <summary>
    /// The shift ΔW·E[x] per output channel of a node whose weight was quantized, or <see langword="null"/> when the
    /// node is not one this correction models (ConvTranspose, Gemm with transA, alpha or beta other than 1, batched
    /// MatMul weights) or its input was not seen.
    /// </summary>
    public float[]? Shift(NodeProto node, ReadOnlySpan<float> weight, ReadOnlySpan<float> restored, ReadOnlySpan<int> shape)
    {
        if (!_inputs.TryGetValue(node.Input[0], out ChannelSums? sums) || sums.Means is not double[] means)
        {
            return null;
        }

        switch (node.OpType)
        {
            case "Conv":
                int outputs = shape[0], perGroup = shape[1], kernel = weight.Length / (outputs * perGroup);
                long groups = Attribute(node, "group")?.I ?? 1;
                if (means.Length != perGroup * groups || outputs % groups != 0)
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
            case "MatMul" when shape.Length == 2:
                return Linear(weight, restored, shape[0], shape[1], transposed: false, means);
            case "Gemm" when Attribute(node, "transA")?.I is null or 0 && Attribute(node, "alpha")?.F is null or 1 && Attribute(node, "beta")?.F is null or 1:
                bool transposed = Attribute(node, "transB")?.I == 1;
                return Linear(weight, restored, shape[transposed ? 1 : 0], shape[transposed ? 0 : 1], transposed, means);
            default:
                return null;
        }
    }

    /// <summary>
    /// Adds a shift to a float bias: the Conv's or Gemm's bias input, else the bias Add that alone reads a MatMul's
    /// output; where there is none, one is created. Shared constants are copied, never changed.
    /// </summary>
    public static void Apply(OnnxGraphEditor editor, NodeProto node, float[] shift)
    {
        if (node.OpType is "Conv" or "Gemm")
        {
            if (node.Input.Count > 2 && node.Input[2].Length > 0)
            {
                float[] bias = Add(editor.ReadConstant(node.Input[2]), shift);
                editor.Rewire(node, 2, editor.AddInitializer(node.Input[2] + "_corrected", TensorProto.Types.DataType.Float, [shift.Length], System.Runtime.InteropServices.MemoryMarshal.AsBytes<float>(bias)));
            }
            else
            {
                node.Input.Add(editor.AddInitializer(node.Output[0] + "_bias_correction", TensorProto.Types.DataType.Float, [shift.Length], System.Runtime.InteropServices.MemoryMarshal.AsBytes<float>(shift)));
            }

            return;
        }

        string output = node.Output[0];
        NodeProto[] consumers = [.. editor.Graph.Node.Where(n => n.Input.Contains(output))];
        if (consumers is [NodeProto add] && add.OpType == "Add" && add.Input.Count == 2 && !editor.Graph.Output.Any(o => o.Name == output))
        {
            int constant = add.Input[0] == output ? 1 : 0;
            if (editor.ConstantShape(add.Input[constant]) is { } dims && dims.Aggregate(1L, (a, b) => a * b) == shift.Length && dims[^1] == shift.Length)
            {
                float[] bias = Add(editor.ReadConstant(add.Input[constant]), shift);
                editor.Rewire(add, constant, editor.AddInitializer(add.Input[constant] + "_corrected", TensorProto.Types.DataType.Float, dims, System.Runtime.InteropServices.MemoryMarshal.AsBytes<float>(bias)));
                return;
            }
        }

        string uncorrected = editor.UniqueName(output + "_uncorrected");
        node.Output[0] = uncorrected;
        string correction = editor.AddInitializer(output + "_bias_correction", TensorProto.Types.DataType.Float, [shift.Length], System.Runtime.InteropServices.MemoryMarshal.AsBytes<float>(shift));
        editor.InsertAfter(node, new NodeProto { Name = editor.UniqueName(node.Name + "_bias_correction"), OpType = "Add", Input = { uncorrected, correction }, Output = { output } });
    }

    private static float[] Add(float[] bias, float[] shift)
    {
        if (bias.Length != shift.Length)
        {
            throw new InvalidDataException(FormattableString.Invariant($"A bias has {bias.Length} values for {shift.Length} output channels."));
        }

        TensorPrimitives.Add(bias, shift, bias);
        return bias;
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

    private static AttributeProto? Attribute(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name);

    /// <summary>Running sums per channel along one axis (negative from the end).</summary>
    private sealed class ChannelSums(int axis)
    {
        private double[]? _sums;
        private long _count;

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
