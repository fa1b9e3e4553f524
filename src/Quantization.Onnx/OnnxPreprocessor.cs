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
        if (model.Opset is > 0 and < 9)
        {
            throw new NotSupportedException($"The model imports opset {model.Opset}; BatchNormalization before opset 9 has other semantics (spatial). Upgrade it first with OnnxOpsetUpgrader.Upgrade(model).");
        }

        OnnxGraphEditor editor = new(model);
        GraphProto graph = editor.Graph;
        HashSet<string> outputs = new(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        Dictionary<string, int> uses = graph.AllNodes().SelectMany(n => n.Input).GroupBy(n => n, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        Dictionary<string, NodeProto> producers = graph.Node.SelectMany(n => n.Output.Where(o => o.Length > 0).Select(o => (Output: o, Node: n))).ToDictionary(p => p.Output, p => p.Node, StringComparer.Ordinal);
        int folded = 0;
        foreach (NodeProto norm in graph.Node.Where(n => n.OpType == "BatchNormalization" && n.IsDefaultDomain() && n.Output.Count == 1 && n.Input.Count == 5 && n.FindAttribute("training_mode")?.I is null or 0))
        {
            bool hasBias = false;
            if (!producers.TryGetValue(norm.Input[0], out NodeProto? conv) || conv.OpType != "Conv" || !conv.IsDefaultDomain() || uses[norm.Input[0]] != 1 || outputs.Contains(norm.Input[0])
                || editor.ConstantShape(conv.Input[1]) is not { Count: >= 3 } shape
                || ((hasBias = conv.Input.Count > 2 && conv.Input[2].Length > 0) && !editor.IsFloatConstant(conv.Input[2]))
                || !norm.Input.Skip(1).All(editor.IsFloatConstant))
            {
                continue;
            }

            long[] dims = [.. shape];
            float[] weight = editor.ReadConstant(conv.Input[1]);
            int channels = checked((int)dims[0]);
            float[][] p = [.. norm.Input.Skip(1).Select(name => Parameter(editor, name, channels, norm.Name))];
            float[] bias = hasBias ? Parameter(editor, conv.Input[2], channels, conv.Name) : new float[channels];
            double epsilon = norm.FindAttribute("epsilon")?.F ?? 1e-5;
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

            editor.Rewire(conv, 1, editor.AddInitializer(conv.Input[1] + "_folded", TensorProto.Types.DataType.Float, dims, MemoryMarshal.AsBytes<float>(weight)));
            string biasName = editor.AddInitializer((hasBias ? conv.Input[2] : conv.Name + "_bias") + "_folded", TensorProto.Types.DataType.Float, [channels], MemoryMarshal.AsBytes<float>(foldedBias));
            if (hasBias)
            {
                editor.Rewire(conv, 2, biasName);
            }
            else if (conv.Input.Count > 2)
            {
                conv.Input[2] = biasName;
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

    private static float[] Parameter(OnnxGraphEditor editor, string name, int channels, string node)
    {
        float[] values = editor.ReadConstant(name);
        return values.Length == channels
            ? values
            : throw new InvalidDataException(FormattableString.Invariant($"Node '{node}': parameter '{name}' has {values.Length} values for {channels} channels."));
    }
}
