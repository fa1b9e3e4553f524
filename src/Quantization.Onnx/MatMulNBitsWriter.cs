using System.Runtime.InteropServices;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Writes ONNX Runtime's <c>com.microsoft.MatMulNBits</c>: <c>Y = A · dequant(B)ᵀ (+ bias)</c> with B the weight as
/// [N, K] in blocks of <c>block_size</c> along K. Stored as B uint8 [N, k_blocks, block_size·bits/8] (codes packed
/// along K, the first in the low bits, K zero-padded to whole blocks), scales float [N, k_blocks], zero points absent
/// (meaning 2^(bits−1), the symmetric case) or uint8 [N, ceil(k_blocks·bits/8)] packed the same way per row. Codes are 8
/// or 4 bits wide; a signed code q is stored as q + 2^(bits−1), and so is a signed zero point.
/// </summary>
internal static class MatMulNBitsWriter
{
    /// <summary>The operator's domain.</summary>
    public const string Domain = "com.microsoft";

    /// <summary>
    /// Quantizes a weight given as rows of K inputs per output channel ([N, K] row-major) in blocks along K, with the
    /// library's kernels: per group of <paramref name="blockSize"/> on axis 1 with <paramref name="scheme"/>'s type,
    /// symmetry and convention. A partial last block gets the parameters that ONNX Runtime's zero padding would give it
    /// (zero is inside every range).
    /// </summary>
    /// <returns>The quantized [N, K] tensor.</returns>
    public static QuantizedTensor QuantizeBlocks(ReadOnlySpan<float> rows, int n, int k, int blockSize, QuantizationScheme scheme, string name) =>
        QuantizedTensor.Quantize(rows, [n, k], BlockScheme(scheme, blockSize), name);

    /// <summary>The scheme of the blocks: <paramref name="scheme"/>'s type, symmetry and convention per group of <paramref name="blockSize"/> along axis 1 of [N, K].</summary>
    public static QuantizationScheme BlockScheme(QuantizationScheme scheme, int blockSize) =>
        scheme.WithGranularity(QuantizationGranularity.PerGroup(blockSize, axis: 1));

    /// <summary>
    /// Turns <paramref name="node"/> (in place, keeping its name and output) into a MatMulNBits of
    /// <paramref name="input"/> by the quantized [N, K] blocks (per group along axis 1; 8- or 4-bit codes), with an
    /// optional bias of N floats; returns the bytes stored.
    /// </summary>
    /// <exception cref="NotSupportedException">The blocks are not per group along axis 1 of a 2-D weight with a block size ONNX Runtime accepts.</exception>
    public static long Write(OnnxGraphEditor editor, NodeProto node, string input, QuantizedTensor blocks, int accuracyLevel, string? bias)
    {
        QuantizationGranularity granularity = blocks.Scheme.Granularity;
        if (blocks.Shape.Length != 2 || granularity.Kind != GranularityKind.PerGroup || granularity.Axis is not (1 or -1) || granularity.GroupSize < 16 || !int.IsPow2(granularity.GroupSize))
        {
            throw new NotSupportedException($"Node '{node.Name}': MatMulNBits takes [N, K] codes in blocks along K of a power of two of at least 16, not {granularity} over [{string.Join(", ", blocks.Shape.ToArray())}].");
        }

        int n = blocks.Shape[0], k = blocks.Shape[1], blockSize = granularity.GroupSize, kBlocks = (k + blockSize - 1) / blockSize;
        int bits = blocks.Scheme.Type.GetBitWidth();
        int offset = blocks.Scheme.Type.IsSigned() ? 1 << (bits - 1) : 0;
        ReadOnlySpan<byte> codes = blocks.Scheme.Type switch
        {
            QuantizedType.Int4 => MemoryMarshal.AsBytes<sbyte>(blocks.GetInt4Data()),
            QuantizedType.UInt4 => blocks.GetUInt4Data(),
            _ => blocks.Data,
        };
        ReadOnlySpan<int> zeroPoints = blocks.Parameters.ZeroPoints;

        // Each row's codes offset to unsigned and padded to whole blocks with its last block's zero point (dequantized
        // padding is 0, although ONNX Runtime ignores the padded part of K).
        int paddedK = kBlocks * blockSize;
        byte[] rows = new byte[checked(n * paddedK)];
        for (int row = 0; row < n; row++)
        {
            Span<byte> target = rows.AsSpan(row * paddedK, paddedK);
            for (int i = 0; i < k; i++)
            {
                target[i] = (byte)(codes[(row * k) + i] + offset);
            }

            target[k..].Fill((byte)(zeroPoints[(row * kBlocks) + kBlocks - 1] + offset));
        }

        byte[] packed = PackRows(rows, n, paddedK, bits);
        string name = node.Input[1];
        string b = editor.AddInitializer(name + "_MatMulNBits_B", TensorProto.Types.DataType.Uint8, [n, kBlocks, blockSize * bits / 8], packed);
        string scales = editor.AddInitializer(name + "_MatMulNBits_scales", TensorProto.Types.DataType.Float, [n, kBlocks], MemoryMarshal.AsBytes(blocks.Parameters.Scales));
        long bytes = packed.Length + (blocks.Parameters.Count * (long)sizeof(float));
        string zeroPointInput = string.Empty;
        if (!blocks.Scheme.Symmetric)
        {
            byte[] points = [.. zeroPoints.ToArray().Select(z => (byte)(z + offset))];
            byte[] packedPoints = PackRows(points, n, kBlocks, bits);
            zeroPointInput = editor.AddInitializer(name + "_MatMulNBits_zero_points", TensorProto.Types.DataType.Uint8, [n, packedPoints.Length / n], packedPoints);
            bytes += packedPoints.Length;
        }

        node.OpType = "MatMulNBits";
        node.Domain = Domain;
        node.Input.Clear();
        node.Input.Add([input, b, scales]);
        if (bias is not null)
        {
            node.Input.Add([zeroPointInput, string.Empty, bias]);
        }
        else if (zeroPointInput.Length > 0)
        {
            node.Input.Add(zeroPointInput);
        }

        node.Attribute.Clear();
        node.Attribute.Add([Int("K", k), Int("N", n), Int("bits", bits), Int("block_size", blockSize), Int("accuracy_level", accuracyLevel)]);
        return bytes;
    }

    /// <summary>Makes the model import the operator's domain (version 1) if it does not yet.</summary>
    public static void ImportDomain(OnnxModel model)
    {
        if (!model.Proto.OpsetImport.Any(o => o.Domain == Domain))
        {
            model.Proto.OpsetImport.Add(new OperatorSetIdProto { Domain = Domain, Version = 1 });
        }
    }

    /// <summary>Rows of unsigned codes, 8-bit as they are, 4-bit two a byte per row (the first in the low nibble, an odd row padded).</summary>
    private static byte[] PackRows(byte[] codes, int rows, int columns, int bits)
    {
        if (bits == 8)
        {
            return codes;
        }

        int width = (columns + 1) / 2;
        byte[] packed = new byte[checked(rows * width)];
        for (int row = 0; row < rows; row++)
        {
            QuantizationPrimitives.PackUInt4(codes.AsSpan(row * columns, columns), packed.AsSpan(row * width, width));
        }

        return packed;
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };
}
