using System.Numerics;
using System.Runtime.InteropServices;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Quantizes embedding tables (the constant data of a Gather on axis 0) per row or per group along the row, and writes
/// them as ONNX Runtime's <c>com.microsoft.GatherBlockQuantized</c>, which gathers the quantized rows and dequantizes
/// only those, or as a DequantizeLinear that feeds the Gather (see <see cref="OnnxEmbeddingQuantizationOptions"/>).
/// GatherBlockQuantized stores 8-bit codes as uint8 (signed codes offset by 128, zero points absent when they are all 128,
/// the operator's default for uint8 data) and 4-bit codes as ONNX int4 or uint4 [rows, columns], packed two a byte over
/// the flattened table as <see cref="QuantizedTensor.Data"/> holds them (zero points, packed the same way, absent when
/// they are all 0, the default for those types); scales are float [rows, blocks].
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
            { Type: not (QuantizedType.Int8 or QuantizedType.UInt8 or QuantizedType.Int4 or QuantizedType.UInt4) } => $"Embedding tables are stored as Int8, UInt8, Int4 or UInt4, not {scheme.Type}.",
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
    /// <exception cref="NotSupportedException">DequantizeLinear is asked for with a per-group or 4-bit scheme before opset 21.</exception>
    public static List<OnnxWeightReport> Quantize(OnnxGraphEditor editor, OnnxModel model, OnnxWeightQuantizationOptions options)
    {
        List<OnnxWeightReport> reports = [];
        if (options.Embeddings is not OnnxEmbeddingQuantizationOptions embeddings)
        {
            return reports;
        }

        bool perGroup = embeddings.Scheme.Granularity.Kind == GranularityKind.PerGroup;
        bool dequantizable = model.Opset >= 21 || (!perGroup && embeddings.Scheme.Type.GetBitWidth() == 8);
        if (embeddings.Operator == OnnxEmbeddingOperator.DequantizeLinear && !dequantizable)
        {
            throw new NotSupportedException(FormattableString.Invariant(
                $"{embeddings.Scheme.Type} {embeddings.Scheme.Granularity} embedding tables read through DequantizeLinear need opset 21 and the model imports {model.Opset}; upgrade it with {nameof(OnnxOpsetUpgrader)}.{nameof(OnnxOpsetUpgrader.Upgrade)}(model, 21), or use GatherBlockQuantized."));
        }

        foreach (IGrouping<string, NodeProto> readers in editor.Graph.Node.Where(n => IsEmbeddingGather(editor, n, embeddings.MinElements)).GroupBy(n => n.Input[0], StringComparer.Ordinal).ToList())
        {
            string table = readers.Key;
            NodeProto[] gathers = [.. readers];
            bool readByOthers = editor.Graph.AllNodes().Any(n => !gathers.Contains(n) && n.Input.Contains(table)) || editor.Graph.Output.Any(o => o.Name == table);
            bool dequantize = readByOthers || embeddings.Operator == OnnxEmbeddingOperator.DequantizeLinear;
            if (!gathers.All(options.SelectsName) || (dequantize && !dequantizable))
            {
                continue;
            }

            (float[] values, int[] shape) = editor.Take(table);
            QuantizationGranularity granularity = perGroup ? QuantizationGranularity.PerGroup(embeddings.Scheme.Granularity.GroupSize, axis: 1) : QuantizationGranularity.PerChannel(0);
            QuantizedTensor quantized = QuantizedTensor.Quantize(values, shape, embeddings.Scheme.WithGranularity(granularity), table);
            TensorErrorReport report;
            if (dequantize)
            {
                editor.AddDequantized(table, quantized);
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
        string table = quantized.Name!;
        int rows = quantized.Shape[0], columns = quantized.Shape[1];
        QuantizationScheme scheme = quantized.Scheme;
        int bits = scheme.Type.GetBitWidth();
        int blockSize = scheme.Granularity.Kind == GranularityKind.PerGroup ? scheme.Granularity.GroupSize : checked((int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(columns, MinBlockSize)));
        int blocks = quantized.Parameters.Count / rows;
        int[] zeroPoints = quantized.Parameters.ZeroPoints.ToArray();
        byte[] codes, points;
        TensorProto.Types.DataType type;
        bool defaultZeroPoints;
        if (bits == 8)
        {
            // uint8 data: signed codes q are stored as q + 128 (flipping the top bit), zero points likewise, so that (q - z)·scale is unchanged.
            bool signed = scheme.Type == QuantizedType.Int8;
            codes = quantized.Data.ToArray();
            if (signed)
            {
                foreach (ref byte code in codes.AsSpan())
                {
                    code ^= 0x80;
                }
            }

            points = [.. zeroPoints.Select(z => (byte)(signed ? z + 128 : z))];
            type = TensorProto.Types.DataType.Uint8;
            defaultZeroPoints = points.All(p => p == 128);
        }
        else
        {
            codes = quantized.Data.ToArray();
            (type, points) = OnnxGraphEditor.StoredZeroPoints(quantized);
            defaultZeroPoints = zeroPoints.All(z => z == 0);
        }

        string data = editor.AddInitializer(table + "_quantized", type, [rows, columns], codes);
        string scales = editor.AddInitializer(table + "_scale", TensorProto.Types.DataType.Float, [rows, blocks], MemoryMarshal.AsBytes(quantized.Parameters.Scales));
        long bytes = codes.Length + (quantized.Parameters.Count * (long)sizeof(float));
        string? zeroPointName = null;
        if (!defaultZeroPoints)
        {
            zeroPointName = editor.AddInitializer(table + "_zero_point", type, [rows, blocks], points);
            bytes += points.Length;
        }

        foreach (NodeProto gather in gathers)
        {
            string indices = gather.Input[1];
            gather.OpType = "GatherBlockQuantized";
            gather.Domain = Domain;
            gather.Input.Clear();
            gather.Input.Add([data, indices, scales]);
            if (zeroPointName is not null)
            {
                gather.Input.Add(zeroPointName);
            }

            gather.Attribute.Clear();
            gather.Attribute.Add([Int("gather_axis", 0), Int("quantize_axis", 1), Int("block_size", blockSize), Int("bits", bits)]);
        }

        return bytes;
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };
}
