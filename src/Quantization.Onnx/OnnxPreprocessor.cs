using System.Runtime.InteropServices;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Rewrites to run before quantization, as ONNX Runtime's <c>quant_pre_process</c> does: they leave what the model
/// computes unchanged (up to float rounding) and put it in the form quantizers and integer kernels expect.
/// </summary>
public static class OnnxPreprocessor
{
    /// <summary>
    /// Folds each BatchNormalization that follows a Conv into the Conv's weight and bias:
    /// W' = W·γ/√(σ²+ε) per output channel and b' = (b − μ)·γ/√(σ²+ε) + β, computed in double. Quantizing the folded
    /// weight is what an integer Conv computes with; a BatchNormalization left behind would also keep ONNX Runtime from
    /// fusing the quantized Conv. A pair is folded only when the Conv's output feeds nothing else and every parameter is a
    /// float constant (an initializer).
    /// </summary>
    /// <param name="model">The model, changed in place; BatchNormalization must be the opset 9+ form (see <see cref="OnnxOpsetUpgrader"/>).</param>
    /// <returns>The number of BatchNormalization nodes folded.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is <see langword="null"/>.</exception>
    /// <exception cref="InvalidDataException">A parameter's stored data does not match its shape, or the shapes do not agree.</exception>
    public static int FoldBatchNormalization(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        OnnxGraphEditor editor = new(model);
        GraphProto graph = editor.Graph;
        Dictionary<string, TensorProto> initializers = graph.Initializer.Where(t => t.DataType == (int)TensorProto.Types.DataType.Float).ToDictionary(t => t.Name, StringComparer.Ordinal);
        Dictionary<string, int> uses = graph.Node.SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)).GroupBy(n => n, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        Dictionary<string, NodeProto> producers = graph.Node.SelectMany(n => n.Output.Select(o => (Output: o, Node: n))).ToDictionary(p => p.Output, p => p.Node, StringComparer.Ordinal);
        int folded = 0;
        foreach (NodeProto norm in graph.Node.Where(n => n.OpType == "BatchNormalization" && n.Domain is "" or "ai.onnx" && n.Output.Count == 1 && n.Input.Count == 5))
        {
            if (!producers.TryGetValue(norm.Input[0], out NodeProto? conv) || conv.OpType != "Conv" || uses[norm.Input[0]] != 1
                || !initializers.ContainsKey(conv.Input[1]) || (conv.Input.Count > 2 && !initializers.ContainsKey(conv.Input[2]))
                || !norm.Input.Skip(1).All(initializers.ContainsKey))
            {
                continue;
            }

            float[] weight = model.ReadFloats(initializers[conv.Input[1]]);
            long[] dims = [.. initializers[conv.Input[1]].Dims];
            int channels = checked((int)dims[0]);
            float[][] p = [.. norm.Input.Skip(1).Select(name => Parameter(model, initializers[name], channels, norm.Name))];
            float[] bias = conv.Input.Count > 2 && conv.Input[2].Length > 0 ? Parameter(model, initializers[conv.Input[2]], channels, conv.Name) : new float[channels];
            double epsilon = norm.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5;
            int perChannel = weight.Length / channels;
            float[] foldedBias = new float[channels];
            for (int c = 0; c < channels; c++)
            {
                double factor = p[0][c] / Math.Sqrt(p[3][c] + epsilon);
                for (int i = c * perChannel; i < (c + 1) * perChannel; i++)
                {
                    weight[i] = (float)(weight[i] * factor);
                }

                foldedBias[c] = (float)(((bias[c] - (double)p[2][c]) * factor) + p[1][c]);
            }

            string weightName = editor.AddInitializer(conv.Input[1] + "_folded", TensorProto.Types.DataType.Float, dims, MemoryMarshal.AsBytes<float>(weight));
            string biasName = editor.AddInitializer((conv.Input.Count > 2 ? conv.Input[2] : conv.Name + "_bias") + "_folded", TensorProto.Types.DataType.Float, [channels], MemoryMarshal.AsBytes<float>(foldedBias));
            editor.Rewire(conv, 1, weightName);
            if (conv.Input.Count > 2)
            {
                editor.Rewire(conv, 2, biasName);
            }
            else
            {
                conv.Input.Add(biasName);
            }

            conv.Output[0] = norm.Output[0];
            editor.RemoveNode(norm);
            ValueInfoProto? stale = graph.ValueInfo.FirstOrDefault(v => v.Name == norm.Input[0]);
            if (stale is not null)
            {
                graph.ValueInfo.Remove(stale);
            }

            folded++;
        }

        editor.Commit();
        return folded;
    }

    private static float[] Parameter(OnnxModel model, TensorProto tensor, int channels, string node)
    {
        float[] values = model.ReadFloats(tensor);
        return values.Length == channels
            ? values
            : throw new InvalidDataException(FormattableString.Invariant($"Node '{node}': parameter '{tensor.Name}' has {values.Length} values for {channels} channels."));
    }
}
