using Quantization.Onnx;
using Quantization.Onnx.Protos;

namespace Quantization.Fuzz;

/// <summary>
/// The fuzz target of the ONNX reader: <see cref="OnnxModel.Load"/> is <see cref="File.ReadAllBytes"/> and then
/// <see cref="OnnxModel.Parse"/>, which this target calls (no file per input), with the scratch directory for external
/// data, where <see cref="ExternalDataFile"/> exists. Then it reads every float32 initializer and Constant value.
/// </summary>
internal static class OnnxReaderTarget
{
    /// <summary>The external-data file that inputs may name: 64 bytes (16 floats) of zeros.</summary>
    public const string ExternalDataFile = "weights.bin";

    private static readonly Lazy<string> DataDirectory = new(WriteExternalData);

    /// <summary>Parses a model and reads its float tensors.</summary>
    /// <param name="input">The serialized model.</param>
    public static void Load(byte[] input) =>
        // Protobuf messages cost far more than their encoding: an empty node is 2 bytes on disk and a few hundred bytes
        // of objects; graph checking adds a dictionary entry per value name.
        FuzzScratch.Run("onnx", input, 512, () =>
        {
            OnnxModel model = OnnxModel.Parse(input, DataDirectory.Value);
            _ = model.Opset;
            IEnumerable<TensorProto> constants = model.Proto.Graph.Node
                .Where(n => n.OpType == "Constant")
                .SelectMany(n => n.Attribute)
                .Where(a => a.T is not null)
                .Select(a => a.T);
            foreach (TensorProto tensor in model.Proto.Graph.Initializer.Concat(constants))
            {
                if (tensor.DataType == (int)TensorProto.Types.DataType.Float)
                {
                    _ = model.ReadFloats(tensor);
                }
            }
        });

    private static string WriteExternalData()
    {
        string directory = Path.Combine(FuzzScratch.Directory, "onnx");
        Directory.CreateDirectory(directory);
        File.WriteAllBytes(Path.Combine(directory, ExternalDataFile), new byte[16 * sizeof(float)]);
        return directory;
    }
}
