using System.Numerics;
using System.Runtime.InteropServices;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Quantizes embedding tables (the constant data of a Gather on axis 0) per row or per group along the row, and writes
/// them as ONNX Runtime's <c>com.microsoft.GatherBlockQuantized</c>, which gathers the quantized rows and dequantizes
/// only those, or as a DequantizeLinear that feeds the Gather (see <see cref="OnnxEmbeddingQuantizationOptions"/>).
/// GatherBlockQuantized stores 8-bit codes as uint8 (signed codes offset by 128), with scales [rows, blocks] and zero
/// points absent when they are all 2^(bits−1), the operator's default.
/// </summary>
internal static class EmbeddingWriter
{
    /// <summary>The operator's domain.</summary>
    private const string Domain = MatMulNBitsWriter.Domain;

    /// <summary>The operator's smallest block.</summary>
    private const int MinBlockSize = 16;

    /// <summary>Whether GatherBlockQuantized runs tables of the scheme, and why not when it does not.</summary>
    public static bool Supports(QuantizationScheme scheme, out string? reason)
    {
        reason = scheme switch
        {
            { Type: not (QuantizedType.Int8 or QuantizedType.UInt8) } => $"Embedding tables are stored as Int8 or UInt8, not {scheme.Type}.",
            { Granularity.Kind: not (GranularityKind.PerChannel or GranularityKind.PerGroup) } => $"Embedding tables are quantized per row (PerChannel) or per group along the row (PerGroup), not {scheme.Granularity}.",
            { Granularity: { Kind: GranularityKind.PerGroup, GroupSize: int size } } when size < MinBlockSize || !int.IsPow2(size) => $"GatherBlockQuantized takes groups of a power of two of at least {MinBlockSize} elements, not {size}.",
            _ => null,
        };
        return reason is null;
    }

    /// <summary>
    /// Quantizes, through <paramref name="editor"/>, the embedding tables that <paramref name="options"/> select, and
    /// returns a report per table (named after its first Gather). Runs after the weight quantizers' own edits, so a table
    /// that a MatMul or Gemm quantizer took is left as it is.
    /// </summary>
    /// <exception cref="NotSupportedException">DequantizeLinear is asked for with a per-group scheme.</exception>
    public static List<OnnxWeightReport> Quantize(OnnxGraphEditor editor, OnnxModel model, OnnxWeightQuantizationOptions options)
    {
        List<OnnxWeightReport> reports = [];
        if (options.Embeddings is not OnnxEmbeddingQuantizationOptions embeddings)
        {
            return reports;
        }

        bool perGroup = embeddings.Scheme.Granularity.Kind == GranularityKind.PerGroup;
        if (embeddings.Operator == OnnxEmbeddingOperator.DequantizeLinear && perGroup)
        {
            throw new NotSupportedException("Embedding tables read through DequantizeLinear are quantized per row; use GatherBlockQuantized for a per-group scheme.");
        }

        foreach (IGrouping<string, NodeProto> readers in editor.Graph.Node.Where(n => IsEmbeddingGather(editor, n, embeddings.MinElements)).GroupBy(n => n.Input[0], StringComparer.Ordinal).ToList())
        {
            string table = readers.Key;
            NodeProto[] gathers = [.. readers];
            bool readByOthers = editor.Graph.AllNodes().Any(n => !gathers.Contains(n) && n.Input.Contains(table)) || editor.Graph.Output.Any(o => o.Name == table);
            bool dequantize = readByOthers || embeddings.Operator == OnnxEmbeddingOperator.DequantizeLinear;
            if (!gathers.All(options.SelectsName) || (dequantize && perGroup))
            {
                continue;
            }

            (float[] values, int[] shape) = editor.Take(table);
            QuantizationGranularity granularity = perGroup ? QuantizationGranularity.PerGroup(embeddings.Scheme.Granularity.GroupSize, axis: 1) : QuantizationGranularity.PerChannel(0);
            QuantizedTensor quantized = QuantizedTensor.Quantize(values, shape, embeddings.Scheme.WithGranularity(granularity), table);
            TensorErrorReport report;
            if (dequantize)
            {
                editor.AddDequantized(table, quantized, axis: 0);
                report = TensorErrorReport.Compare(values, quantized);
            }
            else
            {
                long bytes = WriteGatherBlockQuantized(editor, gathers, quantized);
                report = TensorErrorReport.Compare(table, values, quantized.Dequantize(), values.Length * (long)sizeof(float), bytes);
            }

            reports.Add(new OnnxWeightReport(gathers[0].Name, "Gather", table, 0, report));
        }

        if (editor.Graph.Node.Any(n => n.OpType == "GatherBlockQuantized" && n.Domain == Domain))
        {
            MatMulNBitsWriter.ImportDomain(model);
        }

        return reports;
    }

    /// <summary>Whether the node gathers rows (axis 0) of a float constant table of rank 2 with at least <paramref name="minElements"/> elements.</summary>
    private static bool IsEmbeddingGather(OnnxGraphEditor editor, NodeProto node, long minElements) =>
        node.OpType == "Gather" && node.IsDefaultDomain() && node.Input.Count == 2
        && (node.FindAttribute("axis")?.I ?? 0) == 0
        && editor.ConstantShape(node.Input[0]) is { Count: 2 } dims && dims[0] * dims[1] >= minElements;

    /// <summary>Stores the quantized table once and turns every Gather of it into a GatherBlockQuantized; returns the bytes stored.</summary>
    private static long WriteGatherBlockQuantized(OnnxGraphEditor editor, NodeProto[] gathers, QuantizedTensor quantized)
    {
        const int Bits = 8;
        const int Offset = 1 << (Bits - 1);
        string table = quantized.Name!;
        int rows = quantized.Shape[0], columns = quantized.Shape[1];
        QuantizationGranularity granularity = quantized.Scheme.Granularity;
        int blockSize = granularity.Kind == GranularityKind.PerGroup ? granularity.GroupSize : checked((int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(columns, MinBlockSize)));
        int blocks = quantized.Parameters.Count / rows;

        // Signed codes q are stored as q + 128 (flipping the top bit), so that the operator's uint8 data and zero points read (q - z)·scale.
        bool signed = quantized.Scheme.Type == QuantizedType.Int8;
        int shift = signed ? Offset : 0;
        byte[] codes = quantized.Data.ToArray();
        if (signed)
        {
            foreach (ref byte code in codes.AsSpan())
            {
                code ^= 0x80;
            }
        }

        string data = editor.AddInitializer(table + "_quantized", TensorProto.Types.DataType.Uint8, [rows, columns], codes);
        string scales = editor.AddInitializer(table + "_scale", TensorProto.Types.DataType.Float, [rows, blocks], MemoryMarshal.AsBytes(quantized.Parameters.Scales));
        long bytes = codes.Length + (quantized.Parameters.Count * (long)sizeof(float));
        byte[] points = [.. quantized.Parameters.ZeroPoints.ToArray().Select(z => (byte)(z + shift))];
        string? zeroPoints = null;
        if (points.Any(p => p != Offset))
        {
            zeroPoints = editor.AddInitializer(table + "_zero_point", TensorProto.Types.DataType.Uint8, [rows, blocks], points);
            bytes += points.Length;
        }

        foreach (NodeProto gather in gathers)
        {
            string indices = gather.Input[1];
            gather.OpType = "GatherBlockQuantized";
            gather.Domain = Domain;
            gather.Input.Clear();
            gather.Input.Add([data, indices, scales]);
            if (zeroPoints is not null)
            {
                gather.Input.Add(zeroPoints);
            }

            gather.Attribute.Clear();
            gather.Attribute.Add([Int("gather_axis", 0), Int("quantize_axis", 1), Int("block_size", blockSize), Int("bits", Bits)]);
        }

        return bytes;
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };
}
