using System.Buffers.Binary;
using System.Text;

using Google.Protobuf;

using Quantization.Onnx.Protos;

namespace Quantization.Fuzz;

/// <summary>
/// Writes small valid files for each target with the library's own writers (plus the few layouts they never write:
/// big-endian, Fortran-ordered and version 2.0 <c>.npy</c> files), one directory per target.
/// </summary>
internal static class Seeds
{
    /// <summary>Writes the seeds.</summary>
    /// <param name="root">The directory that receives one subdirectory per target.</param>
    public static void Write(string root)
    {
        WriteNpy(Directory.CreateDirectory(Path.Combine(root, "npy")).FullName);
        WriteNpz(Directory.CreateDirectory(Path.Combine(root, "npz")).FullName);
        WriteSafeTensors(Directory.CreateDirectory(Path.Combine(root, "safetensors")).FullName);
        WriteIndex(Directory.CreateDirectory(Path.Combine(root, "index")).FullName);
        WriteOnnx(Directory.CreateDirectory(Path.Combine(root, "onnx")).FullName);
    }

    private static Dictionary<string, NumPyArray> Arrays() => new(StringComparer.Ordinal)
    {
        ["f32"] = NumPyArray.Create<float>([1.5f, -2, 0, 3, 4, float.NaN], 2, 3),
        ["i8"] = NumPyArray.Create<sbyte>([-128, 0, 1, 127], 4),
        ["bool"] = NumPyArray.Create<bool>([true, false, true], 3),
        ["f16"] = NumPyArray.Create<Half>([(Half)1, (Half)(-0.5f), Half.MaxValue, (Half)0], 2, 2),
        ["u16"] = NumPyArray.Create<ushort>([7], []),
        ["i64"] = NumPyArray.Create<long>([], 0, 3),
    };

    private static void WriteNpy(string directory)
    {
        foreach ((string name, NumPyArray array) in Arrays())
        {
            NpyWriter.Write(Path.Combine(directory, name + ".npy"), array);
        }

        // Layouts the writer never produces: big-endian float64 in Fortran order, and the version 2.0 preamble.
        byte[] doubles = new byte[4 * sizeof(double)];
        for (int i = 0; i < 4; i++)
        {
            BinaryPrimitives.WriteDoubleBigEndian(doubles.AsSpan(i * sizeof(double)), i - 1.5);
        }

        File.WriteAllBytes(Path.Combine(directory, "f8-big-fortran.npy"), Npy(1, "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 2), }", doubles));
        File.WriteAllBytes(Path.Combine(directory, "u4-v2.npy"), Npy(2, "{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }", [1, 0, 0, 0, 255, 255, 255, 255]));
    }

    /// <summary>A <c>.npy</c> file with a hand-written header, padded as numpy pads it (to a multiple of 64 with spaces and a newline).</summary>
    private static byte[] Npy(int major, string header, byte[] data)
    {
        int prefix = major == 1 ? 10 : 12;
        int padded = ((prefix + header.Length + 1 + 63) / 64 * 64) - prefix;
        string text = header.PadRight(padded - 1) + "\n";
        using MemoryStream file = new();
        file.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)major, 0]);
        byte[] length = new byte[prefix - 8];
        if (major == 1)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(length, (ushort)padded);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(length, (uint)padded);
        }

        file.Write(length);
        file.Write(Encoding.Latin1.GetBytes(text));
        file.Write(data);
        return file.ToArray();
    }

    private static void WriteNpz(string directory)
    {
        Dictionary<string, NumPyArray> arrays = Arrays();
        NpzWriter.Write(Path.Combine(directory, "stored.npz"), arrays.Take(3));
        NpzWriter.Write(Path.Combine(directory, "compressed.npz"), arrays.Skip(3), compress: true);
        NpzWriter.Write(Path.Combine(directory, "nested-name.npz"), [new("layer/input:0", arrays["f32"])], compress: true);
    }

    private static void WriteSafeTensors(string directory)
    {
        WriteSafeTensors(
            Path.Combine(directory, "types.safetensors"),
            [
                new("w", SafeTensorDataType.Float32, [2, 2]),
                new("h", SafeTensorDataType.Float16, [3]),
                new("bf", SafeTensorDataType.BFloat16, [2]),
                new("d", SafeTensorDataType.Float64, [1]),
                new("q", SafeTensorDataType.Int8, [2, 3]),
                new("s", SafeTensorDataType.Int32, []),
            ],
            new Dictionary<string, string>(StringComparer.Ordinal) { ["format"] = "pt" });
        WriteSafeTensors(Path.Combine(directory, "empty-tensor.safetensors"), [new("z", SafeTensorDataType.Float32, [0, 4]), new("u", SafeTensorDataType.UInt8, [1])], null);
        WriteSafeTensors(Path.Combine(directory, "no-tensors.safetensors"), [], null);
    }

    private static void WriteSafeTensors(string path, SafeTensorDescriptor[] tensors, Dictionary<string, string>? metadata)
    {
        using SafeTensorsWriter writer = SafeTensorsWriter.Create(path, tensors, metadata);
        byte[] data = new byte[writer.DataLength];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(i * 37);
        }

        writer.Write(data);
        writer.Commit();
    }

    private static void WriteIndex(string directory)
    {
        Dictionary<string, string> weightMap = new(StringComparer.Ordinal);
        foreach ((string file, SafeTensorDescriptor[] tensors) in ReaderTargets.Shards())
        {
            foreach (SafeTensorDescriptor tensor in tensors)
            {
                weightMap[tensor.Name] = file;
            }
        }

        SafeTensorsCheckpoint.WriteIndex(Path.Combine(directory, "two-shards.json"), weightMap, 24);
        SafeTensorsCheckpoint.WriteIndex(Path.Combine(directory, "one-shard-missing.json"), weightMap.Where(e => e.Value == ReaderTargets.Shards()[1].File).ToDictionary(), 4);
    }

    private static void WriteOnnx(string directory)
    {
        TensorProto raw = new() { Name = "W", DataType = (int)TensorProto.Types.DataType.Float, Dims = { 4, 2 }, RawData = ByteString.CopyFrom(new byte[8 * sizeof(float)]) };
        TensorProto listed = new() { Name = "B", DataType = (int)TensorProto.Types.DataType.Float, Dims = { 2 }, FloatData = { 0.5f, -1 } };
        TensorProto external = new()
        {
            Name = "E",
            DataType = (int)TensorProto.Types.DataType.Float,
            Dims = { 2, 2 },
            DataLocation = TensorProto.Types.DataLocation.External,
            ExternalData = { new StringStringEntryProto { Key = "location", Value = OnnxReaderTarget.ExternalDataFile }, new StringStringEntryProto { Key = "offset", Value = "16" }, new StringStringEntryProto { Key = "length", Value = "16" } },
        };
        TensorProto constant = new() { Name = "C", DataType = (int)TensorProto.Types.DataType.Float, Dims = { 2 }, FloatData = { 1, 2 } };
        TensorProto int8 = new() { Name = "Q", DataType = (int)TensorProto.Types.DataType.Int8, Dims = { 2 }, RawData = ByteString.CopyFrom(1, 255) };
        GraphProto graph = new()
        {
            Name = "seed",
            Input = { Value("x", 1, 4) },
            Output = { Value("y", 1, 2) },
            Initializer = { raw, listed, external, int8 },
            Node =
            {
                new NodeProto { Name = "matmul", OpType = "MatMul", Input = { "x", "W" }, Output = { "xw" } },
                new NodeProto { Name = "add", OpType = "Add", Input = { "xw", "B" }, Output = { "xwb" } },
                new NodeProto { Name = "const", OpType = "Constant", Output = { "c" }, Attribute = { new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = constant } } },
                new NodeProto { Name = "mul", OpType = "Mul", Input = { "xwb", "c" }, Output = { "y" } },
            },
        };
        ModelProto model = new() { IrVersion = 8, ProducerName = "seed", Graph = graph, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 13 } } };
        File.WriteAllBytes(Path.Combine(directory, "matmul-add.onnx"), model.ToByteArray());

        ModelProto empty = new() { IrVersion = 7, Graph = new GraphProto { Name = "empty" }, OpsetImport = { new OperatorSetIdProto { Version = 11 } } };
        File.WriteAllBytes(Path.Combine(directory, "empty-graph.onnx"), empty.ToByteArray());
    }

    private static ValueInfoProto Value(string name, params long[] dims)
    {
        TypeProto.Types.Tensor tensor = new() { ElemType = (int)TensorProto.Types.DataType.Float, Shape = new TensorShapeProto() };
        foreach (long dim in dims)
        {
            tensor.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = dim });
        }

        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensor } };
    }
}
